"""x"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from vstlib import cache, paths
from vstlib.errors import InputError
from vstlib.files import _umask, atomic_save_npz, atomic_write_json
from vstlib.flow import mean_motion
from vstlib.runtime import progress
from vstlib.video import clips
from vstlib.video.io import (
    VIDEO_EXTS,
    PathLike,
    load_image,
    read_frames,
    save_frames,
    save_png,
    to_tensor,
    to_uint8,
)
from vstlib.video.synthetic import make_style_image, make_synthetic_clip

STARRY_FIX = ("download The Starry Night (e.g. from Wikimedia Commons) to {path}, or use another image: "
              "`vst prepare --style IMAGE`")


STYLE_FIX = "check the path (a relative --style is read from the current folder), or pass another image with --style"


# --------------------------------------------------------------------------- split
def split_clips(ids, train_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic (train, test) split of clip ids; >= 1 test clip when there are >= 2 clips."""
    ids = sorted(ids)
    n = len(ids)
    if n < 2:
        return ids, []
    n_test = min(n - 1, max(1, int(round(n * (1 - train_fraction)))))
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(ids[i] for i in perm[:n_test])
    train = sorted(ids[i] for i in perm[n_test:])
    return train, test


# --------------------------------------------------------------------------- prepare
ASSET_PREFIX = "assets:"  # config paths inside the package's vendored assets (vstlib/assets/...)


def resolve_path(p: PathLike) -> Path:
    if isinstance(p, str) and p.startswith(ASSET_PREFIX):
        return paths.ASSETS / p[len(ASSET_PREFIX):]
    p = Path(p).expanduser()
    return p if p.is_absolute() else paths.home() / p


def _clip_id(stem: str, taken: set) -> str:
    cid = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "clip"
    base, i = cid, 1
    while cid in taken:
        i += 1
        cid = f"{base}_{i}"
    taken.add(cid)
    return cid


def _sources(cfg, videos: Optional[PathLike]) -> list[tuple[str, str, Optional[Path], bool]]:
    """[(clip_id, source label, path or None for synthetic, held out?)] in a stable order: the clips of
    ``data.source`` (or ``videos``), then the held-out clips of ``data.test_source``."""
    taken: set = set()
    if cfg.data.source == "synthetic" and videos is None:
        main = [(_clip_id(n, taken), f"synthetic:{n}", None, False) for n in cfg.data.synthetic_images]
    else:
        main = _folder_sources(videos if videos is not None else cfg.data.source, taken, videos is None, False)
    held = _folder_sources(cfg.data.test_source, taken, True, True) if cfg.data.test_source else []
    return main + held


def _folder_sources(folder, taken: set, from_config: bool, held_out: bool) -> list:
    where = resolve_path(folder)
    fix = f"put your videos (mp4/mov/webm/gif... or folders of frames) in {where}, or pass --videos"
    if not where.is_dir():
        raise InputError("video folder not found", where, fix)
    entries = sorted(e for e in where.iterdir() if not e.name.startswith(".")
                     and (e.is_dir() or e.suffix.lower() in VIDEO_EXTS))
    if not entries:
        raise InputError("video folder holds no videos", where, fix)
    # vendored clips are labelled "assets:<folder>/<name>": the manifest and cache keys stay the same
    # wherever the checkout lives (an absolute path would differ between clones)
    vendored = from_config and isinstance(folder, str) and folder.startswith(ASSET_PREFIX)
    return [(_clip_id(e.stem, taken), f"{folder.rstrip('/')}/{e.name}" if vendored else str(e), e, held_out)
            for e in entries]


def _clip_key(cfg, source: str) -> str:
    """What a finished clip depends on: re-runs with the same key reuse it."""
    part = {"source": source, "n_frames": cfg.data.n_frames, "size": cfg.data.size, "version": 1}
    if cfg.data.resize != "fit":       # absent for "fit": clips prepared before the field existed stay valid
        part["resize"] = cfg.data.resize
    if not source.startswith("synthetic:"):
        part["flow"] = cfg.digest("flow")  # motion of real clips comes from estimated flow
    return cache.key(part)


def _finished(cdir: Path, key: str) -> Optional[dict]:
    """clip.json of a finished clip made with ``key`` whose frames and flows are whole, else None
    (a damaged one is rebuilt, with a one-line notice)."""
    meta = cdir / "clip.json"
    if not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict):
        print(f"prepare: {meta} is damaged; rebuilding the clip", file=sys.stderr, flush=True)
        return None
    if info.get("key") != key:
        return None
    try:
        clips.check_clip(cdir, info)
    except ValueError as err:
        print(f"prepare: clip {cdir.name!r} at {cdir} is damaged ({err}); rebuilding it",
              file=sys.stderr, flush=True)
        return None
    return info


def _build_clip(cfg, cid: str, source: str, path: Optional[Path], key: str, clips_root: Path,
                device=None) -> dict:
    """Make one clip in a temp dir (frames, exact flows, clip.json), then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cid}-", dir=clips_root))
    os.chmod(tmp, 0o777 & ~_umask())   # mkdtemp makes 0700: give the clip folder a plain mkdir's mode
    try:
        if path is None:
            clip = make_synthetic_clip(source.split(":", 1)[1], cfg.data.n_frames, cfg.data.size)
            frames = clip["frames"]
            atomic_save_npz(tmp / clips.EXACT_FLOW, **{k: clip[k] for k in clips.FLOW_KEYS})
            motion = mean_motion(clip["fw"])
        else:
            frames = read_frames(path, cfg.data.n_frames, cfg.data.size, cfg.data.resize)
            if cfg.flow.source == "exact":
                raise InputError(f"flow.source={cfg.flow.source!r} has no flows for real videos", path,
                                 "set flow.source='dis' or 'raft' (exact flows exist only for synthetic clips)")
            motion = mean_motion(clips.clip_flows(cfg, cid, to_tensor(frames), device)["fw"])
        save_frames(frames, tmp / "frames")                                    # (T,H,W,3) uint8
        info = {"id": cid, "source": source, "n_frames": int(len(frames)), "size": int(cfg.data.size),
                "shape": [int(frames.shape[1]), int(frames.shape[2])],               # (H, W) of the frames
                "motion": round(float(motion), 6), "key": key}
        atomic_write_json(tmp / "clip.json", info)
        final = clips_root / cid
        if final.exists():  # stale or half-made clip from other settings
            shutil.rmtree(final)
        os.replace(tmp, final)
        return info
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare_style(cfg, out: Path) -> None:
    size = cfg.data.size
    if cfg.data.style == "procedural":
        img = make_style_image(size, seed=0)
    else:
        src = resolve_path(cfg.data.style)
        if not src.exists():
            fix = STARRY_FIX.format(path=src) if "starry_night" in src.name else STYLE_FIX
            raise InputError("style image not found", src, fix)
        img = to_uint8(load_image(src, size, cfg.data.resize)[0])   # "short_side": whole, never cropped
    if out.exists():
        try:
            with Image.open(out) as im:
                if np.array_equal(np.asarray(im.convert("RGB")), img):
                    return
        except Exception:  # noqa: BLE001 - a damaged style.png is simply rewritten
            pass
    save_png(out, img)


def prepare(cfg, videos: Optional[PathLike] = None, device=None, strict: bool = False) -> dict:
    """Prepare the clips and style image of ``cfg.profile``; returns (and writes) the manifest.

    Clips are made one at a time into a temp dir and renamed into place (an interruption never
    leaves a half clip); finished clips with the same inputs are reused. Clips whose mean flow
    magnitude is under ``cfg.data.motion_threshold`` are dropped; at most ``cfg.data.n_clips``
    are kept (0 = all), in sorted source order. The held-out clips of ``data.test_source`` are all
    kept, all in the test split (the manifest says which clips are held out). ``device``: where RAFT runs (real videos).
    A video that cannot be read is skipped with a one-line notice and recorded as dropped
    (``strict=True``: stop with its error instead). Finished clips are validated and rebuilt
    when damaged.
    """
    dc = cfg.data
    root = paths.ensure(paths.data_dir(cfg.profile))
    clips_root = paths.ensure(paths.clips_dir(cfg.profile))
    for stale in clips_root.glob(".tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    _prepare_style(cfg, paths.style_path(cfg.profile))

    sources = _sources(cfg, videos)
    if cfg.flow.source == "exact" and any(path is not None for _, _, path, _ in sources):  # a config fault, not a video's
        raise InputError("flow.source='exact' has no flows for real videos", sources[0][2].parent,
                         "set flow.source='raft' (exact flows exist only for synthetic clips)")
    kept, dropped = [], []
    for cid, source, path, held_out in progress(sources, desc="prepare clips"):
        if dc.n_clips and not held_out and sum(not c["held_out"] for c in kept) >= dc.n_clips:
            continue
        key = _clip_key(cfg, source)
        try:
            info = _finished(clips_root / cid, key) or _build_clip(cfg, cid, source, path, key, clips_root, device)
        except InputError as err:
            own = path is not None and err.path is not None and (err.path == path or path in err.path.parents)
            if strict or not own:
                raise                                              # --strict, or not this video's own fault
            print(f"prepare: skipped a video (--strict stops instead): {' '.join(str(err).split())}",
                  file=sys.stderr, flush=True)
            dropped.append({"id": cid, "source": source, "reason": " ".join(str(err).split())[:300]})
            continue
        entry = {"id": cid, "n_frames": info["n_frames"], "size": info["size"], "motion": info["motion"],
                 "source": source, "held_out": held_out}
        if info["motion"] < dc.motion_threshold and not held_out:
            dropped.append({"id": cid, "motion": info["motion"], "source": source})
        else:
            kept.append(entry)
    still = [d for d in dropped if "motion" in d]
    if still:
        print(f"dropped {len(still)} clip(s) with mean motion < {dc.motion_threshold} px: "
              + ", ".join(f"{d['id']} ({d['motion']:.2f} px)" for d in still))
    if not kept:
        if dropped and not still:
            raise InputError("no video could be read", root, "check the videos listed above (re-encode or replace them)")
        raise InputError(f"no clip has mean motion >= {dc.motion_threshold} px", root,
                         "add videos with more motion or lower data.motion_threshold")
    train, test = split_clips([c["id"] for c in kept if not c["held_out"]], dc.train_fraction, dc.split_seed)
    test += [c["id"] for c in kept if c["held_out"]]
    split = {i: "train" for i in train} | {i: "test" for i in test}
    for c in kept:
        c["split"] = split[c["id"]]
    manifest = {"profile": cfg.profile, "config_digest": cfg.digest("data", "flow"), "clips": kept,
                "train": train, "test": test, "dropped": dropped}
    atomic_write_json(paths.manifest_path(cfg.profile), manifest)
    return manifest
