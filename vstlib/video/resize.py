"""The one resize of frames and images: preparation, `vst stylize`, the backbones and the losses.

Bilinear with antialiasing (non-negative weights: [0,1] stays in [0,1], masks stay masks),
differentiable, the identity at the target size. Frames stored as uint8 (prepared clips) and
frames streamed by `vst stylize` go through the same ``resize_uint8``, so the policy sees the
frames it was trained on.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("fit", "short_side")  # cfg.data.resize


def short_side_size(h: int, w: int, short: int, multiple: int = 8) -> tuple[int, int]:
    """(H, W) for an h x w image with the short side ~= ``short``, the aspect ratio kept and both
    sides rounded to multiples of ``multiple`` (8: the latents are 1/8 of the image; the long side
    moves by at most multiple/2 px). Square in, square out."""
    s = max(multiple, int(round(short / multiple)) * multiple)
    scale = s / min(h, w)
    rnd = lambda v: max(multiple, int(round(v * scale / multiple)) * multiple)   # noqa: E731
    return (s, rnd(w)) if h <= w else (rnd(h), s)


def resize(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """Images (N,C,H,W) float to ``size`` (h, w)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


def fit(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """Images (N,C,H,W) cropped to the aspect ratio of ``size`` about their centre, then resized to it."""
    H, W = x.shape[-2:]
    h, w = size
    ch, cw = (H, min(W, round(H * w / h))) if W * h >= H * w else (min(H, round(W * h / w)), W)
    top, left = (H - ch) // 2, (W - cw) // 2
    return resize(x[..., top:top + ch, left:left + cw], size)


def target_size(h: int, w: int, size, mode: str) -> tuple[int, int]:
    """The (H, W) an h x w image gets: ``"short_side"`` (``size`` an int), or ``"fit"`` (an int for
    a square, or (H, W))."""
    if mode not in MODES:
        raise ValueError(f"data.resize must be one of {MODES}, got {mode!r}")
    if mode == "short_side":
        if not isinstance(size, int):
            raise ValueError(f"resize mode 'short_side' takes the short side (an int), got {size!r}")
        return short_side_size(h, w, size)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_uint8(frame: np.ndarray, size, mode: str = "fit") -> np.ndarray:
    """(H,W,3) uint8 -> resized (H',W',3) uint8 (``target_size``); ``size`` None: unchanged."""
    if size is None:
        return frame
    hw = target_size(frame.shape[0], frame.shape[1], size, mode)
    if frame.shape[:2] == hw:
        return frame
    x = torch.from_numpy(np.array(frame, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255   # (1,3,H,W)
    y = fit(x, hw) if mode == "fit" else resize(x, hw)
    return (y[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


__all__ = ["MODES", "short_side_size", "resize", "fit", "target_size", "resize_uint8"]
