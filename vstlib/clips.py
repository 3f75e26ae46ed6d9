"""Prepared clips on disk: the manifest, a clip's frames, the style image, its flows and masks.

Layout (written by ``data.prepare``) under ``paths.data_dir(profile)``::

    clips/<id>/frames/00000.png ...   the clip's frames, size x size
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

from . import cache, paths
from .flow import get_estimator
from .utils import InputError, require_file, to_tensor

EXACT_FLOW = "flow_exact.npz"
FLOW_KEYS = ("fw", "bw", "mask_fw", "mask_bw")


def load_manifest(profile: str) -> dict:
    p = paths.manifest_path(profile)
    if not p.exists():
        raise InputError("manifest not found (data not prepared)", p, f"run `vst prepare --profile {profile}`")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"corrupt manifest ({err})", p, f"run `vst prepare --profile {profile}`") from None


def _read_rgb(p: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"))                                  # (H,W,3) uint8


def load_clip(profile: str, clip_id: str) -> torch.Tensor:
    """Frames of a prepared clip: float (T,3,H,W) in [0,1]."""
    d = paths.clip_dir(profile, clip_id) / "frames"
    files = sorted(d.glob("*.png")) if d.is_dir() else []
    if not files:
        raise InputError(f"clip {clip_id!r} not prepared", d, f"run `vst prepare --profile {profile}`")
    return to_tensor(np.stack([_read_rgb(f) for f in files]))


def load_style(profile: str) -> torch.Tensor:
    """The profile's style image: float (1,3,S,S) in [0,1]."""
    p = require_file(paths.style_path(profile), "style image", f"run `vst prepare --profile {profile}`")
    return to_tensor(_read_rgb(p))[None]


def read_exact_flows(path: Path, what: str = "exact flow file", fix: str = "") -> dict:
    """A clip's flow_exact.npz -> dict of float32 CPU tensors; one InputError if unreadable."""
    p = require_file(path, what, fix)
    try:
        with np.load(p) as z:
            out = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in FLOW_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(f"unreadable {what} ({type(err).__name__}: {err})", p, fix) from None
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
    estimator = get_estimator(fc.source)
    if fc.source == "exact":
        fix = (f"run `vst prepare --profile {cfg.profile}`; exact flows exist only for synthetic clips "
               f"(use flow.source='raft' for real videos)")
        exact = read_exact_flows(paths.clip_dir(cfg.profile, clip_id) / EXACT_FLOW, fix=fix)
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


__all__ = ["load_manifest", "load_clip", "load_style", "read_exact_flows", "flow_cache_path",
           "clip_flows", "EXACT_FLOW", "FLOW_KEYS"]
