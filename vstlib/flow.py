"""Optical flow: backward warping, forward-backward occlusion masks, RAFT estimation, clip flows.

Conventions (every module relies on them):
- a flow is (N,2,H,W) float32 in pixels; channel 0 = u (horizontal, +x right), channel 1 = v
  (vertical, +y down);
- ``warp(image, flow)`` samples ``image`` at (x+u, y+v), so ``warp(I_{t+1}, fw[t]) ~= I_t`` on
  pixels of frame t that are visible in frame t+1;
- for a clip of T frames: ``fw[t]`` = flow t -> t+1, ``bw[t]`` = flow t+1 -> t, masks (T-1,1,H,W)
  in {0,1} with 1 = visible (the fw-bw consistency check passes).
"""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .utils import InputError, atomic_save_npz, pick_device, require_file

FLO_MAGIC = 202021.25
RAFT_MIN_SIZE = 128  # see estimate_flow: 1/8 features, 4-level correlation pyramid, >= 2 cells at the top


# --------------------------------------------------------------------------- warping
def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1,2,H,W) pixel coordinates: channel 0 = x (column), channel 1 = y (row)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])[None]


def warp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Sample ``image`` (N,C,H,W) bilinearly at (x+u, y+v), ``flow`` (N,2,H,W) in pixels.

    ``align_corners=True``: pixel centres sit at integer coordinates 0..W-1, so a pixel position
    p maps to 2p/(W-1) - 1 in grid_sample's [-1,1] units. ``padding_mode="border"`` (default)
    repeats edge pixels for samples that fall outside the frame; those pixels are flagged by
    ``occlusion_mask`` anyway, and border padding keeps the values in range (no black seams
    that would dominate an unmasked loss). Pass ``"zeros"`` to get 0 outside instead.
    """
    n, _, h, w = image.shape
    if flow.shape[0] != n or flow.shape[1] != 2 or flow.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    flow = flow.to(image.dtype)
    pos = pixel_grid(h, w, image.device, image.dtype) + flow          # (N,2,H,W) target pixels
    gx = 2.0 * pos[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * pos[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)                              # (N,H,W,2), x first
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) 1 where x + flow stays inside the frame [0,W-1] x [0,H-1]."""
    _, _, h, w = flow.shape
    pos = pixel_grid(h, w, flow.device, flow.dtype) + flow
    ok = (pos[:, 0] >= 0) & (pos[:, 0] <= w - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= h - 1)
    return ok[:, None].to(flow.dtype)


def occlusion_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, method: str = "sundaram") -> torch.Tensor:
    """(N,1,H,W) float in {0,1}: 1 where the forward-backward check passes (pixel visible).

    ``flow_fw`` maps frame a -> b, ``flow_bw`` maps b -> a. With F_bw~ = F_bw(x + F_fw):
    - ``"sundaram"`` (Sundaram et al. 2010, as in Ruder et al. 2016):
      |F_fw + F_bw~|^2 < 0.01 (|F_fw|^2 + |F_bw~|^2) + 0.5 (tolerance grows with motion);
    - ``"simple"``: |F_fw + F_bw~| < 1 px.
    Pixels whose target x + F_fw leaves the frame are occluded in both methods.
    """
    bw_at = warp(flow_bw, flow_fw)                                      # (N,2,H,W)
    s = flow_fw + bw_at
    err2 = (s ** 2).sum(1, keepdim=True)
    if method == "sundaram":
        tol = 0.01 * ((flow_fw ** 2).sum(1, keepdim=True) + (bw_at ** 2).sum(1, keepdim=True)) + 0.5
        ok = err2 < tol
    elif method == "simple":
        ok = err2 < 1.0
    else:
        raise ValueError(f"unknown occlusion method {method!r}; use 'sundaram' or 'simple'")
    return ok.to(flow_fw.dtype) * inside_mask(flow_fw)


def mean_motion(fw) -> float:
    """Mean flow magnitude in pixels of a (…,2,H,W) flow (torch or numpy)."""
    fw = torch.as_tensor(np.asarray(fw) if not torch.is_tensor(fw) else fw).float()
    return float(torch.linalg.vector_norm(fw, dim=-3).mean())


# --------------------------------------------------------------------------- .flo files
def read_flo(path: Union[str, os.PathLike]) -> np.ndarray:
    """Middlebury .flo file -> (2,H,W) float32 numpy (u, v in pixels)."""
    p = require_file(path, "flow file")
    raw = p.read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise InputError("not a Middlebury .flo file (bad magic number, expected 202021.25)", p,
                         "pass a .flo optical-flow file")
    w, h = (int(x) for x in np.frombuffer(raw[4:12], "<i4"))
    need = 12 + 4 * 2 * w * h
    if w <= 0 or h <= 0 or len(raw) < need:
        raise InputError(f"truncated .flo file ({len(raw)} bytes, header says {w}x{h} needs {need})", p,
                         "re-download or re-export the flow file")
    flow = np.frombuffer(raw[12:need], "<f4").reshape(h, w, 2).transpose(2, 0, 1).copy()
    if not np.isfinite(flow).all():
        raise InputError("flow file contains NaN/inf values", p, "re-export the flow file")
    return flow


# --------------------------------------------------------------------------- RAFT
_MODELS: dict = {}  # (model name, weights) -> RAFT in eval mode, built once per process


def get_raft(model: str = "raft_small", weights: Optional[str] = None) -> torch.nn.Module:
    """torchvision RAFT (cached). ``weights=None``: random init from a fixed seed (tests/smoke);
    ``"DEFAULT"`` (or a weights enum name): pretrained, via ``load_torchvision_weights``."""
    key = (model, weights)
    if key in _MODELS:
        return _MODELS[key]
    from torchvision.models import optical_flow as of

    builders = {"raft_small": (of.raft_small, of.Raft_Small_Weights),
                "raft_large": (of.raft_large, of.Raft_Large_Weights)}
    if model not in builders:
        raise ValueError(f"unknown RAFT model {model!r}; use one of {sorted(builders)}")
    build, enum = builders[model]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random weights are the same in every process
        net = build(weights=None, progress=False)
    if weights is not None:
        from .utils import load_torchvision_weights

        w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        net.load_state_dict(load_torchvision_weights(w, f"RAFT ({model})"))
    net.eval().requires_grad_(False)
    _MODELS[key] = net
    return net


@torch.no_grad()
def estimate_flow(frames_a: torch.Tensor, frames_b: torch.Tensor, model: str = "raft_small",
                  weights: Optional[str] = None, iters: int = 12, batch_size: int = 8) -> torch.Tensor:
    """RAFT flow from ``frames_a`` to ``frames_b`` (N,3,H,W) in [0,1] -> (N,2,H,W) float32.

    Runs on the frames' device, in chunks of ``batch_size`` pairs. RAFT wants inputs in [-1,1]
    with H, W multiples of 8 (we pad by edge replication, then crop the flow back). Its
    correlation pyramid (4 levels on 1/8-resolution features, >= 2 cells at the coarsest) needs
    H, W >= 8 * 2 * 2**3 = 128: smaller frames are upsampled (bilinear) so the short side is
    >= 128, and the flow is resized back with u, v rescaled by the per-axis size ratio.
    """
    if frames_a.shape != frames_b.shape or frames_a.ndim != 4 or frames_a.shape[1] != 3:
        raise ValueError(f"need two (N,3,H,W) batches of equal shape, got {tuple(frames_a.shape)} "
                         f"and {tuple(frames_b.shape)}")
    net = get_raft(model, weights).to(frames_a.device)
    n, _, h, w = frames_a.shape
    s = max(1.0, RAFT_MIN_SIZE / min(h, w))
    if s > 1:  # upsample straight to multiples of 8 (no padding needed)
        h2, w2 = (max(RAFT_MIN_SIZE, 8 * math.ceil(h * s / 8)), max(RAFT_MIN_SIZE, 8 * math.ceil(w * s / 8)))
    else:
        h2, w2 = h, w
    ph, pw = (-h2) % 8, (-w2) % 8
    out = []
    for i in range(0, n, batch_size):
        a = frames_a[i:i + batch_size].float() * 2 - 1              # (B,3,H,W) in [-1,1]
        b = frames_b[i:i + batch_size].float() * 2 - 1
        if (h2, w2) != (h, w):
            a = F.interpolate(a, (h2, w2), mode="bilinear", align_corners=False)
            b = F.interpolate(b, (h2, w2), mode="bilinear", align_corners=False)
        if ph or pw:  # pad right/bottom so pixel (0,0) keeps its coordinates
            a = F.pad(a, (0, pw, 0, ph), mode="replicate")
            b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        flow = net(a.contiguous(), b.contiguous(), num_flow_updates=iters)[-1][:, :, :h2, :w2]
        if (h2, w2) != (h, w):
            flow = F.interpolate(flow, (h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / w2, h / h2], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
        out.append(flow.float())
    return torch.cat(out)


# --------------------------------------------------------------------------- clip flows
def flow_cache_path(cfg, clip_id: str) -> Path:
    # the style image does not move the original frames: changing it keeps the flows
    key = cfg.digest("data", "flow", ignore=("data.style",))
    return paths.cache_dir(cfg.profile) / "flows" / f"{clip_id}-{key}.npz"


def _load_npz_flows(path: Path, what: str, fix: str) -> dict:
    p = require_file(path, what, fix)
    try:
        with np.load(p) as z:
            out = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in ("fw", "bw", "mask_fw", "mask_bw")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(f"unreadable {what} ({type(err).__name__}: {err})", p, fix) from None
    if not all(torch.isfinite(v).all() for v in out.values()):
        raise InputError(f"{what} contains NaN/inf", p, fix)
    return out


def clip_flows(cfg, clip_id: str, frames: Optional[torch.Tensor] = None) -> dict:
    """Flows and masks of the ORIGINAL frames of a prepared clip (they never change: cached).

    Returns dict(fw, bw: (T-1,2,H,W), mask_fw, mask_bw: (T-1,1,H,W)) float32 CPU tensors.
    ``cfg.flow.source == "exact"``: the synthetic clip's analytic flows (saved by data.prepare).
    ``"raft"``: RAFT fw on (frames[:-1], frames[1:]) and bw on (frames[1:], frames[:-1]), one
    batched call each, masks from ``occlusion_mask(method=cfg.flow.occlusion)``; cached under
    ``paths.cache_dir(profile)/flows/<clip_id>-<digest>.npz`` and read back on later calls.
    ``frames`` (T,3,H,W) in [0,1] skips reading the clip from disk.
    """
    fc = cfg.flow
    if fc.source == "exact":
        fix = (f"run `vst prepare --profile {cfg.profile}`; exact flows exist only for synthetic clips "
               f"(use flow.source='raft' for real videos)")
        return _load_npz_flows(paths.clip_dir(cfg.profile, clip_id) / "flow_exact.npz", "exact flow file", fix)
    if fc.source != "raft":
        raise ValueError(f"unknown flow source {fc.source!r}; use 'exact' or 'raft'")
    cache = flow_cache_path(cfg, clip_id)
    if cache.exists():
        return _load_npz_flows(cache, "cached flow file", f"delete {cache} to recompute it")
    if frames is None:
        from .data import load_clip

        frames = load_clip(cfg.profile, clip_id)
    if frames.shape[0] < 2:
        raise InputError(f"clip {clip_id!r} has {frames.shape[0]} frame(s); need at least 2 frames")
    dev = pick_device(cfg.train.device)
    x = frames.to(dev)
    kw = dict(model=fc.raft, weights=fc.raft_weights, iters=fc.raft_iters, batch_size=fc.batch_size)
    fw = estimate_flow(x[:-1], x[1:], **kw)                              # (T-1,2,H,W)
    bw = estimate_flow(x[1:], x[:-1], **kw)
    out = {"fw": fw, "bw": bw,
           "mask_fw": occlusion_mask(fw, bw, fc.occlusion), "mask_bw": occlusion_mask(bw, fw, fc.occlusion)}
    out = {k: v.float().cpu() for k, v in out.items()}
    if not torch.isfinite(out["fw"]).all() or not torch.isfinite(out["bw"]).all():
        raise InputError(f"RAFT returned NaN/inf flow for clip {clip_id!r}", fix="check the frames for NaN")
    atomic_save_npz(cache, **{k: v.numpy() for k, v in out.items()})
    return out


__all__ = ["warp", "inside_mask", "occlusion_mask", "mean_motion", "read_flo", "get_raft", "estimate_flow",
           "clip_flows", "flow_cache_path", "pixel_grid", "RAFT_MIN_SIZE"]
