"""Prepared clips on disk: the manifest, a clip's frames, the style image, its flows and masks.

Layout (written by ``data.prepare``) under ``paths.data_dir(profile)``::

    clips/<id>/frames/00000.png ...   the clip's frames, size x size or short side size (cfg.data.resize)
    clips/<id>/flow_exact.npz         synthetic clips only: analytic fw, bw, mask_fw, mask_bw
    clips/<id>/clip.json              written last: marks a finished clip
    style.png, manifest.json

Estimated flows (``cfg.flow.source`` other than "exact") are cached by ``vstlib.cache`` under
``paths.cache_dir(profile)/flows/<clip_id>-<digest>.safetensors``.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vstlib import cache, paths
from vstlib.errors import InputError, require_file
from vstlib.flow import FLOW_ESTIMATORS
from vstlib.video.io import to_tensor

EXACT_FLOW = "flow_exact.npz"
FLOW_KEYS = ("fw", "bw", "mask_fw", "mask_bw")


MANIFEST_KEYS = ("clips", "train", "test")


def load_manifest(profile: str) -> dict:
    p = paths.manifest_path(profile)
    fix = f"run `vst prepare --profile {profile}` (it rewrites the manifest)"
    if not p.exists():
        raise InputError("manifest not found (data not prepared)", p, f"run `vst prepare --profile {profile}`")
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"corrupt manifest ({err})", p, fix) from None
    missing = [k for k in MANIFEST_KEYS if not isinstance(m, dict) or k not in m]
    if missing:
        raise InputError(f"manifest lacks {', '.join(missing)}", p, fix)
    if not all(isinstance(c, dict) and "id" in c for c in m["clips"]):
        raise InputError("manifest has clip entries without an 'id'", p, fix)
    return m


def _read_rgb(p: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"))                                  # (H,W,3) uint8


def _hw(size) -> Optional[tuple]:
    """``size`` of a clip (int: square side, or [H, W]) -> (H, W) or None."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"has an unreadable frame size {size!r} in clip.json")


def clip_shape(info: dict) -> Optional[tuple]:
    """(H, W) of a prepared clip's frames from its clip.json: ``shape`` (written since frames may be
    non-square, ``data.resize="short_side"``), else the square ``size`` of older clips."""
    return _hw(info.get("shape") or info.get("size"))


def read_clip_frames(cdir: Path, n_frames: Optional[int] = None, size=None) -> np.ndarray:
    """uint8 (T,H,W,3) frames of a prepared clip folder; ``ValueError`` saying what is wrong
    (a frame that does not decode, a wrong count or size). ``size``: a square side or (H, W)."""
    hw = _hw(size)
    files = sorted((Path(cdir) / "frames").glob("*.png"))
    if not files:
        raise ValueError("has no frames")
    if n_frames is not None and len(files) != n_frames:
        raise ValueError(f"has {len(files)} frames, clip.json says {n_frames}")
    out = []
    for f in files:
        try:
            a = _read_rgb(f)
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
            raise ValueError(f"frame {f.name} does not decode ({type(err).__name__})") from None
        if hw is not None and a.shape[:2] != hw:
            raise ValueError(f"frame {f.name} is {a.shape[1]}x{a.shape[0]}, expected {hw[1]}x{hw[0]}")
        if out and a.shape != out[0].shape:
            raise ValueError(f"frame {f.name} is {a.shape[1]}x{a.shape[0]}, frame 0 {out[0].shape[1]}x{out[0].shape[0]}")
        out.append(a)
    return np.stack(out)


def check_clip(cdir: Path, info: dict) -> None:
    """A finished clip folder is whole: frames decode with the count/size in clip.json and exact
    flows (when it has them) are finite with the right shapes. ``ValueError`` says what is not."""
    n, size = info.get("n_frames"), clip_shape(info)
    read_clip_frames(cdir, n, size)
    if str(info.get("source", "")).startswith("synthetic:"):
        try:
            read_exact_flows(Path(cdir) / EXACT_FLOW, n_frames=n, size=size)
        except InputError as err:
            raise ValueError(f"{EXACT_FLOW}: {err.args[0].split(': ', 1)[-1]}") from None


def load_clip(profile: str, clip_id: str) -> torch.Tensor:
    """Frames of a prepared clip: float (T,3,H,W) in [0,1] (validated: count, size, decodes)."""
    cdir = paths.clip_dir(profile, clip_id)
    d = cdir / "frames"
    fix = f"run `vst prepare --profile {profile}` (it rebuilds damaged clips)"
    if not d.is_dir() or not any(d.glob("*.png")):
        raise InputError(f"clip {clip_id!r} not prepared", d, f"run `vst prepare --profile {profile}`")
    try:
        info = json.loads((cdir / "clip.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        info = {}
    try:
        frames = read_clip_frames(cdir, info.get("n_frames"), clip_shape(info))
    except ValueError as err:
        raise InputError(f"prepared clip {clip_id!r} is damaged: {err}", cdir, fix) from None
    return to_tensor(frames)


def load_style(profile: str) -> torch.Tensor:
    """The profile's style image: float (1,3,H,W) in [0,1] (square with data.resize="fit", else whole)."""
    fix = f"run `vst prepare --profile {profile}` (it rewrites it)"
    p = require_file(paths.style_path(profile), "style image", fix)
    try:
        img = _read_rgb(p)
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        raise InputError(f"prepared style image does not decode ({type(err).__name__})", p, fix) from None
    return to_tensor(img)[None]


def read_exact_flows(path: Path, what: str = "exact flow file", fix: str = "",
                     n_frames: Optional[int] = None, size=None) -> dict:
    """A clip's flow_exact.npz -> dict of float32 CPU tensors; one InputError if unreadable,
    non-finite, or (given ``n_frames``/``size``: a square side or (H, W)) of the wrong shape."""
    hw = _hw(size)
    p = require_file(path, what, fix)
    try:
        with np.load(p) as z:
            out = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in FLOW_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"unreadable {what} ({type(err).__name__}: {err})", p, fix) from None
    for k, v in out.items():
        c = 2 if k in ("fw", "bw") else 1
        t = v.shape[0] if n_frames is None else n_frames - 1
        h, w = (v.shape[-2:] if hw is None else hw) if v.ndim == 4 else (-1, -1)
        if v.ndim != 4 or tuple(v.shape) != (t, c, h, w) or v.shape[0] != out["fw"].shape[0]:
            raise InputError(f"{what} has {k} of shape {tuple(v.shape)}, expected ({t},{c},H,W)", p, fix)
    if not all(torch.isfinite(v).all() for v in out.values()):
        raise InputError(f"{what} contains NaN/inf", p, fix)
    return out


def flow_cache_path(cfg, clip_id: str) -> Path:
    # the style image does not move the original frames: changing it keeps the flows
    key = cfg.digest("data", "flow", ignore=("data.style",))
    return paths.cache_dir(cfg.profile) / "flows" / f"{clip_id}-{key}.safetensors"


def clip_flows(cfg, clip_id: str, frames: Optional[torch.Tensor] = None, device=None) -> dict:
    """Flows and masks of the ORIGINAL frames of a prepared clip (they never change: cached).

    Returns dict(fw, bw: (T-1,2,H,W), mask_fw, mask_bw: (T-1,1,H,W)) float32 CPU tensors.
    ``cfg.flow.source`` names the estimator (``flow.FLOW_ESTIMATORS``): "exact" reads the
    synthetic clip's analytic flows; others run on ``device`` (default: the frames' device)
    and are cached. ``frames`` (T,3,H,W) in [0,1] skips reading the clip from disk.
    """
    fc = cfg.flow
    estimator = FLOW_ESTIMATORS.pick(fc.source)
    if fc.source == "exact":
        fix = (f"run `vst prepare --profile {cfg.profile}` (it rebuilds damaged clips); exact flows exist only "
               f"for synthetic clips (use flow.source='raft' for real videos)")
        n = frames.shape[0] if frames is not None else None
        exact = read_exact_flows(paths.clip_dir(cfg.profile, clip_id) / EXACT_FLOW, fix=fix, n_frames=n)
        return estimator(frames, fc, exact)

    def build() -> dict:
        x = frames if frames is not None else load_clip(cfg.profile, clip_id)   # (T,3,H,W)
        if x.shape[0] < 2:
            raise InputError(f"clip {clip_id!r} has {x.shape[0]} frame(s); need at least 2 frames")
        if device is not None:
            x = x.to(device)
        out = {k: v.float().cpu() for k, v in estimator(x, fc, None).items()}
        if not all(torch.isfinite(out[k]).all() for k in ("fw", "bw")):
            raise InputError(f"{fc.source} returned NaN/inf flow for clip {clip_id!r}",
                             fix="check the frames for NaN")
        return out

    out = cache.cached_tensors(flow_cache_path(cfg, clip_id), build, f"{fc.source} flows of {clip_id}",
                               expect=FLOW_KEYS)
    return {k: out[k].float().cpu() for k in FLOW_KEYS}


__all__ = ["load_manifest", "load_clip", "read_clip_frames", "clip_shape", "check_clip", "MANIFEST_KEYS", "load_style", "read_exact_flows", "flow_cache_path",
           "clip_flows", "EXACT_FLOW", "FLOW_KEYS"]
