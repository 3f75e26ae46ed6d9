"""Optical flow maths: backward warping, forward-backward occlusion masks, estimators by name.

Pure maths: no disk, no config object beyond the ``cfg.flow`` section (clips on disk: ``clips.py``).

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
from typing import Optional, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vstlib.errors import InputError, require_file
from vstlib.hub import load_torchvision_weights
from vstlib.registry import Registry
from vstlib.runtime import fork_rng

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


def resize_flow(flow: torch.Tensor, size: tuple) -> torch.Tensor:
    """A flow (N,2,H,W) in pixels resized to ``size`` (h, w): bilinear with antialiasing (a smaller
    flow field averages its vectors), u scaled by w/W and v by h/H (a move of k px at 512 is k/2 px
    at 256). Differentiable; the identity when the size already matches."""
    H, W = flow.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return flow
    out = F.interpolate(flow, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out * torch.tensor([w / W, h / H], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)


def latent_flow(flows: dict, h: int, w: int) -> tuple:
    """The input's backward flow and visibility on a latent grid (h, w): (bw (T-1,2,h,w), vis (T-1,1,h,w)).

    Area-averaged; the displacement is divided by the downsampling factor of each axis (a move of
    8 pixels is one latent cell at factor 8); vis = the share of a cell's pixels that are visible.
    """
    bw, mask = flows["bw"].float(), flows["mask_bw"].float()                    # (T-1,2,H,W), (T-1,1,H,W)
    H, W = bw.shape[-2:]
    lat = F.interpolate(bw, size=(h, w), mode="area")                          # (T-1,2,h,w)
    lat = torch.stack([lat[:, 0] * (w / W), lat[:, 1] * (h / H)], dim=1)      # x by w/W, y by h/H
    return lat.contiguous(), F.interpolate(mask, size=(h, w), mode="area").contiguous()


def masked_mean(diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of diff (N,C,H,W) over pixels where mask (N,1,H,W) is 1 (soft weights allowed): (N,);
    0 where nothing is visible."""
    num = (diff * mask).flatten(1).sum(1)                                     # (N,)
    den = mask.flatten(1).sum(1) * diff.shape[1]                              # (N,) visible values
    return num / den.clamp_min(1.0)


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) 1 where x + flow stays inside the frame [0,W-1] x [0,H-1]."""
    _, _, h, w = flow.shape
    pos = pixel_grid(h, w, flow.device, flow.dtype) + flow
    ok = (pos[:, 0] >= 0) & (pos[:, 0] <= w - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= h - 1)
    return ok[:, None].to(flow.dtype)


def motion_boundary(flow: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) bool: Ruder et al.'s motion boundaries, |grad u|^2 + |grad v|^2 > 0.01 |flow|^2 + 0.002."""
    du_dy, du_dx = torch.gradient(flow[:, 0], dim=(1, 2))              # (N,H,W) each, central differences
    dv_dy, dv_dx = torch.gradient(flow[:, 1], dim=(1, 2))
    grad2 = du_dx ** 2 + du_dy ** 2 + dv_dx ** 2 + dv_dy ** 2          # (N,H,W)
    return (grad2 > 0.01 * (flow ** 2).sum(1) + 0.002)[:, None]


def occlusion_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, method: str = "sundaram") -> torch.Tensor:
    """(N,1,H,W) float in {0,1}: 1 where the forward-backward check passes (pixel visible).

    ``flow_fw`` maps frame a -> b, ``flow_bw`` maps b -> a. With F_bw~ = F_bw(x + F_fw):
    - ``"sundaram"`` (Sundaram et al. 2010, as in Ruder et al. 2016):
      |F_fw + F_bw~|^2 < 0.01 (|F_fw|^2 + |F_bw~|^2) + 0.5 (tolerance grows with motion);
    - ``"simple"``: |F_fw + F_bw~| < 1 px;
    - ``"ruder"``: Sundaram's check plus Ruder et al.'s (2016) motion-boundary term: pixels with
      |grad u|^2 + |grad v|^2 > 0.01 |F_fw|^2 + 0.002 (flow gradients by central differences) are
      occluded too (a boundary pixel's neighbours move differently, so its warp is unreliable).
    Pixels whose target x + F_fw leaves the frame are occluded in every method.
    """
    bw_at = warp(flow_bw, flow_fw)                                      # (N,2,H,W)
    s = flow_fw + bw_at
    err2 = (s ** 2).sum(1, keepdim=True)
    if method in ("sundaram", "ruder"):
        tol = 0.01 * ((flow_fw ** 2).sum(1, keepdim=True) + (bw_at ** 2).sum(1, keepdim=True)) + 0.5
        ok = err2 < tol
        if method == "ruder":
            ok = ok & ~motion_boundary(flow_fw)
    elif method == "simple":
        ok = err2 < 1.0
    else:
        raise ValueError(f"unknown occlusion method {method!r}; use 'sundaram', 'ruder' or 'simple'")
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
    with fork_rng():
        torch.manual_seed(0)  # random weights are the same in every process
        net = build(weights=None, progress=False)
    if weights is not None:
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


# --------------------------------------------------------------------------- estimators
# cfg.flow.source -> fn(frames (T,3,H,W) in [0,1], cfg_flow, exact) -> dict(fw, bw (T-1,2,H,W),
# mask_fw, mask_bw (T-1,1,H,W)). A new estimator is one function and one decorator.
FLOW_ESTIMATORS = Registry("flow source", "flow.source")


MASKS = ("fw", "bw")


def with_masks(fw: torch.Tensor, bw: torch.Tensor, method: str = "sundaram", masks: tuple = MASKS) -> dict:
    """fw, bw (T-1,2,H,W) -> dict(fw, bw, mask_fw, mask_bw) by the forward-backward check; ``masks``
    names the masks made (the policy's observation needs "bw" alone: `vst stylize` skips the other)."""
    pair = {"fw": (fw, bw), "bw": (bw, fw)}
    return {"fw": fw, "bw": bw, **{f"mask_{d}": occlusion_mask(*pair[d], method) for d in masks}}


@FLOW_ESTIMATORS.register("exact")
def exact_flows(frames: torch.Tensor, cfg_flow, exact: Optional[dict] = None, masks: tuple = MASKS) -> dict:
    """The known flows of a synthetic clip (made with the clip, passed in as ``exact``)."""
    if exact is None:
        raise ValueError("exact flows exist only for synthetic clips; use flow.source='raft'")
    return exact


@FLOW_ESTIMATORS.register("raft")
def raft_flows(frames: torch.Tensor, cfg_flow, exact: Optional[dict] = None, masks: tuple = MASKS) -> dict:
    """RAFT fw on (frames[:-1], frames[1:]) and bw on (frames[1:], frames[:-1]), one batched call
    each, on the frames' device; masks from ``occlusion_mask(method=cfg_flow.occlusion)``."""
    kw = dict(model=cfg_flow.raft, weights=cfg_flow.raft_weights, iters=cfg_flow.raft_iters,
              batch_size=cfg_flow.batch_size)
    fw = estimate_flow(frames[:-1], frames[1:], **kw)                     # (T-1,2,H,W)
    bw = estimate_flow(frames[1:], frames[:-1], **kw)
    return with_masks(fw, bw, cfg_flow.occlusion, masks)


# --------------------------------------------------------------------------- DIS (OpenCV)
# OpenCV's DIS optical flow (Kroeger et al. 2016): real flow on a CPU, no weights to download.
DIS_PRESETS = ("ultrafast", "fast", "medium")


def _gray_u8(frames: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float in [0,1] -> (N,H,W) uint8 luma (ITU-R 601 weights, as cv2.COLOR_RGB2GRAY)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    y = (frames.detach().float().cpu().clamp(0, 1) * w).sum(1) * 255
    return y.round().to(torch.uint8).numpy()


def dis_flow(frames_a: torch.Tensor, frames_b: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """DIS flow a -> b for each pair of (N,3,H,W) frames in [0,1] -> (N,2,H,W) float32 (CPU).

    Same convention as ``warp``: ``warp(b, dis_flow(a, b)) ~= a`` on pixels of a visible in b
    (tests/test_real_models.py checks the sign on MPI-Sintel). DIS works on grayscale uint8
    frames; OpenCV's own threads are capped at torch's thread count.
    """
    if frames_a.shape != frames_b.shape or frames_a.ndim != 4 or frames_a.shape[1] != 3:
        raise ValueError(f"need two (N,3,H,W) batches of equal shape, got {tuple(frames_a.shape)} "
                         f"and {tuple(frames_b.shape)}")
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; use one of {', '.join(DIS_PRESETS)}")
    cv2.setNumThreads(torch.get_num_threads())
    code = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}")
    ga, gb = _gray_u8(frames_a), _gray_u8(frames_b)
    # a fresh DIS object per pair (5 us): one reused across pairs carries state from the previous pair
    # on small frames (measured at 40 px: 0.18 px apart), so a pair's flow would depend on its batch
    out = np.stack([cv2.DISOpticalFlow_create(code).calc(a, b, None) for a, b in zip(ga, gb)])   # (N,H,W,2), (u, v)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().float()


@FLOW_ESTIMATORS.register("dis")
def dis_flows(frames: torch.Tensor, cfg_flow, exact: Optional[dict] = None, masks: tuple = MASKS) -> dict:
    """OpenCV DIS fw on (frames[:-1], frames[1:]) and bw on (frames[1:], frames[:-1]) on the CPU,
    preset ``cfg_flow.dis_preset``; masks as for RAFT. No weights: usable on any profile."""
    fw = dis_flow(frames[:-1], frames[1:], cfg_flow.dis_preset).to(frames.device)   # (T-1,2,H,W)
    bw = dis_flow(frames[1:], frames[:-1], cfg_flow.dis_preset).to(frames.device)
    return with_masks(fw, bw, cfg_flow.occlusion, masks)


# --------------------------------------------------------------------------- Farneback (OpenCV)
# Farneback's polynomial-expansion flow (Farneback 2003): a second real CPU estimator, independent of
# DIS, for judges that must not share the method's flow. Parameters fixed: OpenCV's reference example
# (pyramid scale 0.5, 3 levels, 15 px window, 3 iterations, poly_n 5, poly_sigma 1.2, box window);
# on the Sintel samples they beat 5 levels / poly_n 7 (EPE 0.93 / 3.90 / 24.9 px on easy / medium / hard).
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def farneback_flow(frames_a: torch.Tensor, frames_b: torch.Tensor) -> torch.Tensor:
    """Farneback flow a -> b for each pair of (N,3,H,W) frames in [0,1] -> (N,2,H,W) float32 (CPU).

    Same convention as ``warp`` and ``dis_flow``: ``warp(b, farneback_flow(a, b)) ~= a`` on pixels
    of a visible in b; grayscale uint8 input, parameters ``FARNEBACK``.
    """
    if frames_a.shape != frames_b.shape or frames_a.ndim != 4 or frames_a.shape[1] != 3:
        raise ValueError(f"need two (N,3,H,W) batches of equal shape, got {tuple(frames_a.shape)} "
                         f"and {tuple(frames_b.shape)}")
    cv2.setNumThreads(torch.get_num_threads())
    ga, gb = _gray_u8(frames_a), _gray_u8(frames_b)
    out = np.stack([cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK) for a, b in zip(ga, gb)])  # (N,H,W,2)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().float()


@FLOW_ESTIMATORS.register("farneback")
def farneback_flows(frames: torch.Tensor, cfg_flow, exact: Optional[dict] = None, masks: tuple = MASKS) -> dict:
    """OpenCV Farneback fw on (frames[:-1], frames[1:]) and bw on (frames[1:], frames[:-1]) on the
    CPU; masks by ``cfg_flow.occlusion`` as for DIS. The evaluation's judge (``vstlib.evaluation``)."""
    fw = farneback_flow(frames[:-1], frames[1:]).to(frames.device)               # (T-1,2,H,W)
    bw = farneback_flow(frames[1:], frames[:-1]).to(frames.device)
    return with_masks(fw, bw, cfg_flow.occlusion, masks)


__all__ = ["warp", "resize_flow", "latent_flow", "masked_mean", "inside_mask", "motion_boundary", "occlusion_mask",
           "mean_motion", "read_flo", "get_raft", "estimate_flow", "pixel_grid", "RAFT_MIN_SIZE", "FLOW_ESTIMATORS",
           "with_masks", "MASKS", "exact_flows", "raft_flows", "dis_flows", "dis_flow", "DIS_PRESETS", "FARNEBACK",
           "farneback_flow", "farneback_flows"]
