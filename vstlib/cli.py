"""The ``vst`` command line (also ``python -m vstlib.cli``).

    vst prepare   [--profile cpu|smoke|paper] [--videos DIR] [--style IMG] [--set section.field=value ...]
    vst baseline  [--profile ...]
    vst train     [--profile ...] [--run main] [--learner reinforce|rloo|pathwise] [--no-resume] [--max-updates N]
    vst evaluate  [--profile ...] [--run main]
    vst compare   [--profile ...] [--executor sequential|ray]   # every method, seen and unseen styles -> eval_summary.csv
    vst stylize   --video IN.mp4|FRAMES/ --out OUT.mp4|FRAMES/ [--crf 23] [--style STYLE]
                  [--policy policy.safetensors] [--size N]
    vst stylize   --video 'clips/*.mp4'|VIDEOS/ --out OUT/ [--executor sequential|ray]   # one OUT/<name>.mp4 each
    vst reproduce [--profile ...] [--videos DIR] [--style IMG] [--set ...]   # every notebook, then verify
    vst verify    [--profile ...]          # the last reproduction against the committed results
    vst publish   [--profile ...]          # copy the last reproduction into figures/, paper/, notebooks/
    vst download-weights --profile paper   # fetch every pretrained weight once, with network
    vst stand-in-weights --profile paper DIR  # random weights, real layouts (rehearsals)

Bad input ends with exit status 2 and one line naming the file and the fix (no traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from vstlib.errors import VstError, check_output_path, os_error_line


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


def executor_sets(args) -> list[str]:
    """``--set`` plus ``--executor NAME`` as ``compare.executor=NAME`` (where independent runs go)."""
    return list(args.set) + ([f"compare.executor={args.executor}"] if getattr(args, "executor", None) else [])


# --------------------------------------------------------------------------- commands
def cmd_prepare(args) -> int:
    from vstlib.video.prepare import prepare

    # the user's paths are read from the current folder (config defaults from VSTLIB_HOME)
    style = _from_cwd(args.style) if args.style else None
    sets = list(args.set) + ([f"data.style={style}"] if style else [])
    cfg = make_config(args.profile, sets)
    t0 = time.perf_counter()
    m = prepare(cfg, videos=_from_cwd(args.videos) if args.videos else None, device=cfg.train.device,
                strict=args.strict)
    print(f"prepared {len(m['clips'])} clips ({len(m['train'])} train, {len(m['test'])} test, "
          f"{len(m.get('dropped', []))} dropped) in {time.perf_counter() - t0:.1f} s")
    from vstlib import paths

    print(f"  {paths.manifest_path(cfg.profile)}")
    return 0


def _from_cwd(p: str) -> str:
    return str(Path(p).expanduser().absolute())


def cmd_baseline(args) -> int:
    from vstlib import paths
    from vstlib.baseline import run_baseline

    cfg = make_config(args.profile, args.set)
    t0 = time.perf_counter()
    info = run_baseline(cfg)
    calls = sum(v.get("unet_calls", 0) for v in info.values())
    print(f"baseline: {len(info)} clips stylized in {time.perf_counter() - t0:.1f} s "
          f"({calls} UNet calls; 0 = all cached)")
    print(f"  {paths.results_dir(cfg.profile) / 'baseline'}")
    return 0


def cmd_train(args) -> int:
    from vstlib.rl.train import read_log, train

    cfg = make_config(args.profile, list(args.set) + ([f"train.learner={args.learner}"] if args.learner else []))
    t0 = time.perf_counter()
    out = train(cfg, run=args.run, resume=not args.no_resume, max_updates=args.max_updates)
    if os.environ.get("RANK", "0") != "0":                                    # torchrun: rank 0 reports
        return 0
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

    from vstlib.evaluation.evaluate import evaluate

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


def cmd_compare(args) -> int:
    import pandas as pd

    from vstlib import report
    from vstlib.evaluation.compare import compare

    cfg = make_config(args.profile, executor_sets(args))
    t0 = time.perf_counter()
    _, summary = compare(cfg)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for group in ("seen", "unseen"):
            view = report.comparison_view(summary, group)
            if len(view):
                print(f"{group} style(s): change against N(I_t) in %, [95 % paired interval]")
                print(view.to_string(index=False))
    print(f"compared in {time.perf_counter() - t0:.1f} s (results/{cfg.profile}/eval_summary.csv, eval_per_clip.csv)")
    return 0


def cmd_stylize(args) -> int:
    from vstlib.errors import require_file
    from vstlib.rl.checkpoint import load_policy
    from vstlib.stylize import stylize_video, video_inputs

    cfg = make_config(args.profile, executor_sets(args))
    device = cfg.train.device                                                  # resolved in make_config
    videos = video_inputs(args.video)
    if videos is not None:
        return stylize_several(args, cfg, videos)
    # 1. check every input and the output before any heavy work
    out_path = check_output_path(args.out, (".mp4",), "--out", folder=True)
    # then stream: read, resize, stylize, write per chunk
    video = require_file(args.video[0], "input video", "pass an existing video file with --video")
    policy = load_policy(args.policy, cfg.policy, device) if args.policy else None
    info = stylize_video(cfg, video, out_path, style=args.style, policy=policy, size=args.size,
                         chunk=args.chunk, max_frames=args.max_frames, device=device, crf=args.crf,
                         cut_threshold=None if args.cut_threshold >= 1 else args.cut_threshold)
    print(f"wrote {info['path']} ({info['frames']} frames, {info['width']}x{info['height']}, {info['fps']:g} fps"
          f"{', policy ' + str(args.policy) if args.policy else ', baseline only'})")
    return 0


def stylize_several(args, cfg, videos: list) -> int:
    """``vst stylize`` of several videos into the folder ``--out`` (one <name>.mp4 each), one job per
    video on the executor; outputs that exist are finished ones: skipped (a rerun resumes)."""
    from vstlib.errors import InputError
    from vstlib.rl.checkpoint import load_policy
    from vstlib.stylize import stylize_many

    out = Path(args.out).expanduser().absolute()
    if out.suffix or (out.exists() and not out.is_dir()):
        raise InputError(f"--video names {len(videos)} videos: --out must be a folder (one <name>.mp4 each)", out,
                         "pass a folder name without a suffix")
    check_output_path(out / "any.mp4", (".mp4",), "--out")                     # its folder writable
    if args.policy:
        load_policy(args.policy, cfg.policy, cfg.train.device)                 # a bad policy: one line, now
    done, skipped = stylize_many(cfg, videos, out, policy_file=args.policy, style=args.style, size=args.size,
                                 chunk=args.chunk, max_frames=args.max_frames, device=cfg.train.device,
                                 crf=args.crf, cut_threshold=None if args.cut_threshold >= 1 else args.cut_threshold)
    if skipped:
        print(f"skipped {len(skipped)} of {len(videos)} videos: their outputs in {out} exist (delete one to redo it)")
    for info in done:
        print(f"wrote {info['path']} ({info['frames']} frames, {info['width']}x{info['height']}, {info['fps']:g} fps)")
    return 0


def reproduce_overrides(args) -> list[str]:
    """``--set`` plus ``--videos``/``--style`` as the overrides every notebook gets.

    ``--videos DIR`` is ``data.source=DIR`` and ``--style IMG`` is ``data.style=IMG`` (absolute
    paths: the notebooks run in notebooks/). Checked here, before any notebook starts.
    """
    from vstlib.errors import require_file

    sets = executor_sets(args)                 # not a reduced run: config.RUNTIME_SETTINGS
    if args.videos:
        sets.append(f"data.source={require_file(args.videos, 'video folder', 'pass an existing folder with --videos').resolve()}")
    if args.style:
        sets.append(f"data.style={require_file(args.style, 'style image', 'pass an existing image with --style').resolve()}")
    make_config(args.profile, sets)                                            # bad --set: one line, now
    return sets


def cmd_reproduce(args) -> int:
    from vstlib import reproduce

    return int(reproduce.main(args.profile, args.only, reproduce_overrides(args)) or 0)


def cmd_verify(args) -> int:
    from vstlib.verify import verify

    report = verify(args.profile)
    print(report.line())
    return 0 if report.ok else 1


def cmd_publish(args) -> int:
    from vstlib.reproduce import publish

    written = publish(args.profile, force=args.force)
    print(f"published the {args.profile} reproduction: {len(written)} files in "
          f"{', '.join(sorted({p.parent.name for p in written}))}; review them with `git diff`")
    return 0


def cmd_download_weights(args) -> int:
    """Fetch every pretrained weight the profile uses; say where each one is cached. Every item is
    tried (one failure does not hide the others); any failure exits 2."""
    from vstlib.downloads import download_jobs, fix_for_failures

    cfg = make_config(args.profile, args.set)
    jobs = download_jobs(cfg)
    if not jobs:
        print(f"profile {cfg.profile!r} uses only tiny random or vendored models (vstlib/assets): nothing to download")
        return 0
    failed = []
    for what, fetch in jobs:
        try:
            print(f"{what}: {fetch()}", flush=True)
        except VstError as err:
            failed.append(what)
            print(f"{what}: FAILED: {' '.join(str(err).split())}", file=sys.stderr)
    if failed:
        raise VstError(f"{len(failed)} of {len(jobs)} downloads failed ({', '.join(failed)})", fix=fix_for_failures())
    return 0


def cmd_stand_in_weights(args) -> int:
    """``vst stand-in-weights --profile paper DIR [--scale full|tiny] [--dtype ...]``."""
    from vstlib.config import TINY
    from vstlib.tools import standin

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

    def add_executor(p, what):
        from vstlib.executors import EXECUTORS

        p.add_argument("--executor", default=None, choices=sorted(EXECUTORS),
                       help=f"where {what} run: sequential (in this process) or ray (one Ray task each, on the "
                            "cluster at RAY_ADDRESS or a local one; pip install -e .[scale]); "
                            "= --set compare.executor=NAME, default the profile's")

    def add(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        from vstlib.config import DEFAULT_PROFILE

        p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PRESETS),
                       help="cpu: real small vendored models on real clips (default); cpu-full: the same with "
                            "every learner, control and frontier row of the comparison; smoke: tiny random "
                            "models for unit tests; paper: GPU, DiffuseST weights, the authors' "
                            "choices where the paper text is silent; paper-text: the paper text's")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one config field (repeatable), e.g. --set train.lr=5e-4")
        p.set_defaults(func=func)
        return p

    p = add("prepare", cmd_prepare, "prepare clips, flows and the style image")
    p.add_argument("--videos", default=None, help="folder of videos (default: the profile's source)")
    p.add_argument("--style", default=None, help="style image (default: the profile's data.style)")
    # skipping is the default: one bad download should not discard hours of preparation; the
    # manifest records what was dropped and why. --strict (CI, reproduce) stops instead.
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable video instead of skipping it")
    add("baseline", cmd_baseline, "stylize every clip with DiffuseST (per-frame baseline)")
    p = add("train", cmd_train, "train the latent policy (REINFORCE by default)")
    p.add_argument("--learner", default=None, choices=("reinforce", "rloo", "pathwise"),
                   help="learner (= --set train.learner=NAME; default: the profile's)")
    # --run-name: under torchrun, whose own parser refuses --run (a prefix of its --run-path)
    p.add_argument("--run", "--run-name", dest="run", default="main",
                   help="run name (folder under results/<profile>/runs/)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    p.add_argument("--max-updates", type=int, default=None, help="stop after N updates in total")
    p = add("evaluate", cmd_evaluate, "Table 1 (losses) and Table 2 (CLIP similarities)")
    p.add_argument("--run", default="main")
    p = add("compare", cmd_compare, "learners (over seeds), competitors and controls on the test clips")
    add_executor(p, "every training run and evaluation unit")
    p = add("stylize", cmd_stylize, "stylize your own video")
    p.add_argument("--video", required=True, nargs="+",
                   help="input video (mp4, gif, ...) or a folder of frames (sorted by name); several videos: "
                        "a folder of videos, a quoted pattern ('clips/*.mp4') or several paths, with --out a "
                        "folder (one <name>.mp4 each; existing outputs are skipped, so a rerun resumes)")
    p.add_argument("--style", default=None,
                   help="style (default: the profile's painting); faststyle: wave|udnie|scream|wreck or their paintings")
    p.add_argument("--policy", default=None, help="trained policy.safetensors (default: baseline only)")
    p.add_argument("--out", required=True, help="output .mp4, or a new folder (no suffix) for lossless PNG frames")
    p.add_argument("--crf", type=int, default=23, help="mp4 quality: x264's constant rate factor (0 best .. 51)")
    p.add_argument("--cut-threshold", type=float, default=0.2,
                   help="shot cuts: the policy restarts where consecutive frames' colour histograms differ more "
                        "(0..1, vstlib/video/cuts.py; 1 = never)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--size", type=int, default=None, help="short side in pixels (default: the profile's data.size)")
    p.add_argument("--chunk", type=int, default=16, help="frames per chunk (memory bound; same output)")
    add_executor(p, "several videos (one job each)")
    p = add("reproduce", cmd_reproduce, "run every notebook: all tables and figures")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 03")
    p.add_argument("--videos", default=None, help="folder of videos for notebook 01 (= --set data.source=DIR)")
    p.add_argument("--style", default=None, help="style image (= --set data.style=IMAGE)")
    add_executor(p, "the comparison's and the grids' training runs and evaluation units")
    add("verify", cmd_verify, "compare the last reproduction with the committed results (within tolerance)")
    p = add("publish", cmd_publish, "copy the last reproduction into figures/, paper/tables, paper/results, notebooks/")
    p.add_argument("--force", action="store_true", help="publish a reduced run (--set overrides) too")
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
    except OSError as err:                                   # full disk, permissions, a vanished file
        print(f"vst {args.command}: error: {os_error_line(err)}. Fix: free space or fix permissions there, "
              f"then rerun (finished steps are kept)", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: one line here, the traceback in a log file
        log = _write_crash_log(args)
        print(f"vst {args.command}: internal error ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
              f"traceback in {log}. Please report it with that file", file=sys.stderr)
        return 1


def _write_crash_log(args) -> Path:
    """The current exception's traceback -> a log file under .cache/logs (or the temp folder)."""
    import os
    import tempfile
    import traceback

    from vstlib import paths

    text = f"vst {' '.join(sys.argv[1:]) or args.command}\n{traceback.format_exc()}"
    name = f"vst-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (paths.home() / ".cache" / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return Path("(unwritable)")


if __name__ == "__main__":
    sys.exit(main())
