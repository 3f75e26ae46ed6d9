"""Shot cuts in a frame sequence, from the input alone: the colour-histogram distance of consecutive frames.

A cut is where the recurrent state of the policy must restart (the previous shot would bleed into
the next). The score is half the L1 distance between the joint RGB histograms (8 bins per channel)
of two frames, in [0, 1]. Measured on the 22 vendored clips (DAVIS, SAM 2, Sintel, ... at 256 px):
at most 0.047 between consecutive frames of one clip, at least 0.33 between the last frame of one
clip and the first of another, hence the default threshold 0.2.
"""
from __future__ import annotations

import torch

CUT_THRESHOLD = 0.2
BINS = 8


def histograms(frames: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """frames (T,3,H,W) in [0,1] -> normalised joint RGB histograms (T, bins**3)."""
    q = (frames.clamp(0, 1) * (bins - 1e-6)).long()                          # (T,3,H,W) bin per channel
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]                        # (T,H,W) joint bin
    h = torch.stack([torch.bincount(i.flatten(), minlength=bins ** 3) for i in idx]).float()
    return h / h.sum(1, keepdim=True)


def cut_scores(frames: torch.Tensor) -> torch.Tensor:
    """(T,3,H,W) -> (T-1,): the histogram distance between frame t and t+1, in [0, 1]."""
    h = histograms(frames)
    return 0.5 * (h[1:] - h[:-1]).abs().sum(1)


def cuts(frames: torch.Tensor, threshold: float = CUT_THRESHOLD) -> list[int]:
    """Indices t (1..T-1) of the frames that start a new shot."""
    if len(frames) < 2:
        return []
    return [int(t) + 1 for t in torch.nonzero(cut_scores(frames) > threshold).flatten()]


__all__ = ["CUT_THRESHOLD", "histograms", "cut_scores", "cuts"]
