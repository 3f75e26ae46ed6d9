"""OpenCV's DIS optical flow (Kroeger et al. 2016): real flow on a CPU, no weights to download.

Same convention as :mod:`vstlib.flow`: ``dis_flow(a, b)`` is the flow from frame a to frame b,
(N,2,H,W) float32 in pixels (u right, v down), so ``flow.warp(b, dis_flow(a, b)) ~= a`` on
pixels of a visible in b (tests/test_real_models.py checks the sign on MPI-Sintel).
DIS works on grayscale uint8 frames; OpenCV's own threads are capped at torch's thread count.
"""
from __future__ import annotations

import numpy as np
import torch

PRESETS = ("ultrafast", "fast", "medium")


def _gray_u8(frames: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float in [0,1] -> (N,H,W) uint8 luma (ITU-R 601 weights, as cv2.COLOR_RGB2GRAY)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    y = (frames.detach().float().cpu().clamp(0, 1) * w).sum(1) * 255
    return y.round().to(torch.uint8).numpy()


def dis_flow(frames_a: torch.Tensor, frames_b: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """DIS flow a -> b for each pair of (N,3,H,W) frames in [0,1] -> (N,2,H,W) float32 (CPU)."""
    import cv2

    if frames_a.shape != frames_b.shape or frames_a.ndim != 4 or frames_a.shape[1] != 3:
        raise ValueError(f"need two (N,3,H,W) batches of equal shape, got {tuple(frames_a.shape)} "
                         f"and {tuple(frames_b.shape)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; use one of {', '.join(PRESETS)}")
    cv2.setNumThreads(torch.get_num_threads())
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    ga, gb = _gray_u8(frames_a), _gray_u8(frames_b)
    out = np.stack([dis.calc(a, b, None) for a, b in zip(ga, gb)])   # (N,H,W,2), (u, v)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().float()


__all__ = ["dis_flow", "PRESETS"]
