"""The ``vst`` command line (also ``python -m vstlib.cli``).

    vst prepare   [--profile smoke|paper] [--videos DIR] [--style IMG] [--set section.field=value ...]
    vst baseline  [--profile ...]
    vst train     [--profile ...] [--run main] [--no-resume] [--max-updates N]
    vst evaluate  [--profile ...] [--run main]
    vst stylize   --video IN.mp4 --style STYLE.png [--policy policy.safetensors] --out OUT.mp4
    vst reproduce [--profile ...]          # every notebook, every table and figure
    vst download-weights --profile paper   # fetch every pretrained weight once, with network
    vst stand-in-weights --profile paper DIR  # random weights, real layouts (rehearsals)

Bad input ends with exit status 2 and one line naming the file and the fix (no traceback).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from vstlib.utils import InputError, VstError


# --------------------------------------------------------------------------- config from flags
def make_config(profile: str, sets: Sequence[str] = ()):
    """The profile with ``--set`` overrides and the device resolved (``config.load``): once, here."""
    from vstlib.config import load

    try:
        return load(profile, sets)
    except ValueError as err:
        raise VstError(f"bad --set: {err}", fix="write --set section.field=value, e.g. --set train.lr=5e-4") from None
    except KeyError as err:
        raise VstError(f"bad config override: {err.args[0]}",
                       fix="see vstlib/config.py for the sections and fields") from None
    except TypeError as err:
        raise VstError(f"bad --set {err}", fix="fix the value's type") from None


# --------------------------------------------------------------------------- commands
def cmd_prepare(args) -> int:
    from vstlib.data import prepare

    sets = list(args.set) + ([f"data.style={args.style}"] if args.style else [])
    cfg = make_config(args.profile, sets)
    t0 = time.perf_counter()
    m = prepare(cfg, videos=args.videos, device=cfg.train.device)
    print(f"prepared {len(m['clips'])} clips ({len(m['train'])} train, {len(m['test'])} test, "
          f"{len(m.get('dropped', []))} dropped) in {time.perf_counter() - t0:.1f} s")
    from vstlib import paths

    print(f"  {paths.manifest_path(cfg.profile)}")
    return 0


def cmd_baseline(args) -> int:
    from vstlib import paths
    from vstlib.baseline import run_baseline

    cfg = make_config(args.profile, args.set)
    t0 = time.perf_counter()
    info = run_baseline(cfg)
    calls = sum(v["unet_calls"] for v in info.values())
    print(f"baseline: {len(info)} clips stylized in {time.perf_counter() - t0:.1f} s "
          f"({calls} UNet calls; 0 = all cached)")
    print(f"  {paths.results_dir(cfg.profile) / 'baseline'}")
    return 0


def cmd_train(args) -> int:
    from vstlib.train import read_log, train

    cfg = make_config(args.profile, args.set)
    t0 = time.perf_counter()
    out = train(cfg, run=args.run, resume=not args.no_resume, max_updates=args.max_updates)
    log = read_log(out)
    msg = f"trained run {args.run!r}: {len(log)} updates in {time.perf_counter() - t0:.1f} s"
    if len(log):
        msg += (f"; mean advantage first/last epoch {log[log.epoch == log.epoch.min()].advantage.mean():+.4g}"
                f" / {log[log.epoch == log.epoch.max()].advantage.mean():+.4g}; "
                f"{int(log.skipped.sum())} skipped")
    print(msg)
    print(f"  {out}")
    return 0


def cmd_evaluate(args) -> int:
    import pandas as pd

    from vstlib.evaluate import evaluate

    cfg = make_config(args.profile, args.set)
    t0 = time.perf_counter()
    tables = evaluate(cfg, run=args.run)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for name in ("table1", "table2"):
            df = tables[name]
            print(f"{name} ({df['note'].iloc[0] if len(df) else ''}):")
            print(df.drop(columns=["note", "profile"]).to_string(index=False, float_format="%.5g"))
    print(f"evaluated in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_stylize(args) -> int:
    from vstlib.checkpoint import load_policy
    from vstlib.data import read_frames
    from vstlib.rollout import make_stylizer, policy_frames
    from vstlib.utils import require_file, to_tensor

    cfg = make_config(args.profile, args.set)
    device = cfg.train.device                                                  # resolved in make_config
    # 1. check every input before any heavy work
    video = require_file(args.video, "input video", "pass an existing video file with --video")
    frames = read_frames(video, max_frames=args.max_frames, size=cfg.backbone.resolution)  # (T,H,W,3) uint8
    if frames.shape[0] < 2:
        raise InputError(f"video has {frames.shape[0]} frame(s); video style transfer needs 2 or more",
                         video, "pass a longer clip")
    style = _load_style_image(args.style, cfg)                                 # (1,3,S,S)
    policy = load_policy(args.policy, cfg.policy, device) if args.policy else None
    out_path = Path(args.out)
    if out_path.suffix.lower() != ".mp4":
        raise InputError("output must be an .mp4 file", out_path, "pass --out something.mp4")
    # 2. stylize: DiffuseST per frame, then the policy's mean residual from frame 1 on
    x = to_tensor(frames).contiguous().to(device)                              # (T,3,H,W) NCHW, not NHWC strides
    stylizer = make_stylizer(cfg, device)
    base = stylizer.stylize(x, style.to(device))                               # images (T,3,H,W)
    images = policy_frames(policy.to(device), stylizer, base) if policy is not None else base.images
    # 3. write the mp4 at the input's frame rate
    fps = _video_fps(video)
    write_video(out_path, images, fps)
    print(f"wrote {out_path} ({images.shape[0]} frames, {images.shape[-1]}x{images.shape[-2]}, {fps:g} fps"
          f"{', policy ' + str(args.policy) if args.policy else ', baseline only'})")
    return 0


def _load_style_image(path, cfg):
    from vstlib.data import load_image
    from vstlib.utils import require_file

    p = require_file(path, "style image", "pass an existing image with --style")
    try:
        img = load_image(p, size=cfg.backbone.resolution)
    except VstError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL/imageio raise many kinds; the user needs one line
        raise InputError(f"unreadable style image ({type(err).__name__})", p,
                         "pass a PNG or JPEG image") from None
    return img


def _video_fps(path: Path, default: float = 10.0) -> float:
    try:
        import imageio.v3 as iio

        fps = float(iio.immeta(path, plugin="pyav").get("fps") or 0)
    except Exception:  # noqa: BLE001 - image folders, GIFs... fall back
        return default
    return fps if 0 < fps < 1000 else default


def write_video(path: Path, frames, fps: float) -> Path:
    """Frames (T,3,H,W) in [0,1] -> H.264 mp4 (yuv420p: plays everywhere), written atomically."""
    import imageio.v3 as iio
    import numpy as np

    from vstlib.utils import atomic_path, to_uint8

    arr = to_uint8(frames)                                                     # (T,H,W,3)
    h, w = arr.shape[1] // 2 * 2, arr.shape[2] // 2 * 2                        # yuv420p needs even sides
    arr = np.ascontiguousarray(arr[:, :h, :w])
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, plugin="pyav", extension=".mp4", codec="libx264", fps=fps,
                    out_pixel_format="yuv420p")
    return Path(path)


def cmd_reproduce(args) -> int:
    from vstlib import reproduce

    return int(reproduce.main(args.profile, args.only) or 0)


def cmd_download_weights(args) -> int:
    """Fetch every pretrained weight the profile uses; say where each one is cached.

    Every item is tried (one failure does not hide the others); any failure exits 2.
    """
    import torchvision

    from vstlib.config import TINY
    from vstlib.utils import load_torchvision_weights, torch_hub_checkpoint, weights_guard

    cfg = make_config(args.profile, args.set)
    jobs = []                                                                  # (what, fetch -> path)

    def tv(enum, what):
        jobs.append((what, lambda: (load_torchvision_weights(enum, what),
                                    torch_hub_checkpoint(Path(enum.url).name))[1]))

    if cfg.backbone.model_id != TINY:
        from huggingface_hub import hf_hub_download, snapshot_download

        from vstlib.backbones.diffusest.hub import QFORMER_TOKENIZER, hf_cache_dir, missing_files

        def hub(repo, files=None):
            with weights_guard(repo, model_ids=[repo]):
                if files is None:
                    return Path(snapshot_download(repo, cache_dir=hf_cache_dir()))
                return Path([hf_hub_download(repo, f, cache_dir=hf_cache_dir()) for f in files][0]).parent

        def blip():
            root = hub(cfg.backbone.model_id)
            gone = missing_files(root)       # snapshot_download offline returns an incomplete folder as is
            if gone:
                raise VstError(f"the snapshot lacks {', '.join(gone)}", root,
                               f"delete {root.parent.parent} and download it again")
            return root
        jobs.append((cfg.backbone.model_id, blip))
        jobs.append((f"{QFORMER_TOKENIZER} (Q-Former tokenizer)",
                     lambda: hub(QFORMER_TOKENIZER, ["vocab.txt", "tokenizer_config.json", "config.json"])))
    if cfg.reward.vgg_weights:
        tv(getattr(torchvision.models.VGG19_Weights, cfg.reward.vgg_weights), "VGG19 (style loss)")
    if cfg.reward.lpips_pretrained:
        tv(torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet (LPIPS trunk)")
    if cfg.flow.source == "raft" and cfg.flow.raft_weights:
        enum = {"raft_large": torchvision.models.optical_flow.Raft_Large_Weights,
                "raft_small": torchvision.models.optical_flow.Raft_Small_Weights}[cfg.flow.raft]
        tv(getattr(enum, cfg.flow.raft_weights), f"RAFT ({cfg.flow.raft})")
    if cfg.eval.clip_model != TINY and cfg.eval.clip_pretrained:
        import open_clip

        def clip():
            pcfg = open_clip.get_pretrained_cfg(cfg.eval.clip_model, cfg.eval.clip_pretrained)
            ids = [x for x in [(pcfg or {}).get("hf_hub", "").strip("/")] if x]
            with weights_guard(f"CLIP {cfg.eval.clip_model} ({cfg.eval.clip_pretrained})", model_ids=ids):
                return Path(open_clip.download_pretrained(pcfg))
        jobs.append((f"CLIP {cfg.eval.clip_model}/{cfg.eval.clip_pretrained}", clip))
    if not jobs:
        print(f"profile {cfg.profile!r} uses only tiny random models: nothing to download")
        return 0
    failed = []
    for what, fetch in jobs:
        try:
            print(f"{what}: {fetch()}", flush=True)
        except VstError as err:
            failed.append(what)
            print(f"{what}: FAILED: {' '.join(str(err).split())}", file=sys.stderr)
    if failed:
        from vstlib.backbones.diffusest.hub import offline

        fix = ("HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it (`unset HF_HUB_OFFLINE`) on a "
               "machine with network and rerun `vst download-weights`" if offline() else
               "check the network connection and rerun `vst download-weights`")
        raise VstError(f"{len(failed)} of {len(jobs)} downloads failed ({', '.join(failed)})", fix=fix)
    return 0


def cmd_stand_in_weights(args) -> int:
    """``vst stand-in-weights --profile paper DIR [--scale full|tiny] [--dtype ...]``."""
    from vstlib import standin
    from vstlib.config import TINY

    cfg = make_config(args.profile, args.set)
    if cfg.backbone.model_id == TINY:
        print(f"profile {cfg.profile!r} uses only tiny random models built in code: no weights to stand in")
        return 0
    out = standin.write_standin_weights(args.dir, scale=args.scale, dtype=args.dtype)
    for part, path in out.items():
        print(f"{part}: {path}")
    env = " ".join(f"{k}={v}" for k, v in standin.standin_env(args.dir).items())
    print(f"STAND-IN weights (random; nothing computed from them is a result). Use them with:\n  {env}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vst", description="Video style transfer with reinforcement learning.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    from vstlib.config import PRESETS

    def add(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--profile", default="smoke", choices=sorted(PRESETS),
                       help="smoke: CPU, offline, tiny models (default); paper: GPU, real weights, the authors' "
                            "choices where the paper text is silent; paper-text: the paper text's")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one config field (repeatable), e.g. --set train.lr=5e-4")
        p.set_defaults(func=func)
        return p

    p = add("prepare", cmd_prepare, "prepare clips, flows and the style image")
    p.add_argument("--videos", default=None, help="folder of videos (default: the profile's source)")
    p.add_argument("--style", default=None, help="style image (default: the profile's data.style)")
    add("baseline", cmd_baseline, "stylize every clip with DiffuseST (per-frame baseline)")
    p = add("train", cmd_train, "train the latent policy with REINFORCE")
    p.add_argument("--run", default="main", help="run name (folder under results/<profile>/runs/)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    p.add_argument("--max-updates", type=int, default=None, help="stop after N updates in total")
    p = add("evaluate", cmd_evaluate, "Table 1 (losses) and Table 2 (CLIP similarities)")
    p.add_argument("--run", default="main")
    p = add("stylize", cmd_stylize, "stylize your own video")
    p.add_argument("--video", required=True, help="input video (mp4, gif, ...)")
    p.add_argument("--style", required=True, help="style image")
    p.add_argument("--policy", default=None, help="trained policy.safetensors (default: baseline only)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    p = add("reproduce", cmd_reproduce, "run every notebook: all tables and figures")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 03")
    add("download-weights", cmd_download_weights, "download every pretrained weight of the profile")
    p = add("stand-in-weights", cmd_stand_in_weights,
            "write RANDOM weights with the real architectures in the real cache layouts (rehearsals)")
    p.add_argument("dir", help="new or empty folder (gets a STAND-IN-WEIGHTS.txt marker)")
    p.add_argument("--scale", default="full", choices=["full", "tiny"], help="tiny: BLIP-Diffusion at tiny widths")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage dtype")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except VstError as err:
        print(f"vst {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vst {args.command}: interrupted (a later run resumes from the last checkpoint)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
