"""The judge's measures of stylized frames: what the method never optimises (and, labelled as such,
the warping error on the method's own flow).

All take stylized frames S (T,3,H,W) in [0,1] and return one value per frame or per pair.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vstlib.flow import masked_mean, warp

WARP_ERRORS = ("lai", "rgb_mean")


def warping_error(prev: torch.Tensor, cur: torch.Tensor, fw: torch.Tensor,
                  mask_fw: torch.Tensor, definition: str = "lai") -> torch.Tensor:
    """Warping error on visible pixels: (N,).

    ``"lai"`` (Lai et al. 2018, the published metric): mean over visible pixels of the squared RGB
    distance ||prev - warp(cur, fw)||^2 summed over the 3 channels. ``"rgb_mean"``: also averaged
    over channels (exactly 1/3 of Lai's).
    """
    if definition not in WARP_ERRORS:
        raise ValueError(f"eval.warp_error must be one of {WARP_ERRORS}, got {definition!r}")
    per_channel = masked_mean((prev - warp(cur, fw)).pow(2), mask_fw)          # (N,) mean over C too
    return per_channel * prev.shape[1] if definition == "lai" else per_channel


def edge_correlation(S: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the Sobel edge magnitudes of S_t and I_t (grey), per frame: (T,).

    A spatial check that the frames still follow the input's structure (a frozen frame or a fixed
    pattern loses it); it says nothing about motion.
    """
    def edges(x):                                                              # (T,3,H,W) -> (T,H*W)
        g = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]     # (T,1,H,W) luma
        k = torch.tensor([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]], device=x.device, dtype=x.dtype)
        gx = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k[None, None])
        gy = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k.T[None, None])
        return (gx ** 2 + gy ** 2).sqrt().flatten(1)

    a, b = edges(S.float()), edges(frames.float())
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)


__all__ = ["warping_error", "edge_correlation", "WARP_ERRORS"]
