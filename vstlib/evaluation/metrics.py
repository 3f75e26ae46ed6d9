"""The judge's measures of a stylized clip S (T,3,H,W) in [0,1]: pure functions returning per-frame or
per-pair tensors.

Lai et al. 2018 ("Learning Blind Video Temporal Consistency", ECCV) judge a video by its warping error
(temporal stability) and by its distance to the per-frame processed video R (fidelity). To be ungameable
the flows are the INPUT video's, by an estimator the method never uses (``flow.farneback_flow``; the
method uses DIS), and every mask is recomputed here from those flows.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from vstlib.flow import farneback_flow, masked_mean, occlusion_mask, warp

LUMA = (0.299, 0.587, 0.114)                    # ITU-R 601, as flow._gray_u8
LAPLACIAN = ((0., 1., 0.), (1., -4., 1.), (0., 1., 0.))
MSSSIM_MIN_SIDE = 176                           # 5 scales, 11-px window: the 1/16 image must be > 10 px
EPS = 1e-12
WARP_ERRORS = ("lai", "rgb_mean")


def warping_error(prev: torch.Tensor, cur: torch.Tensor, fw: torch.Tensor,
                  mask_fw: torch.Tensor, definition: str = "lai") -> torch.Tensor:
    """Warping error of pairs on the pixels ``mask_fw`` (N,1,H,W) says are visible: (N,).

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


# --------------------------------------------------------------------------- temporal
def judge_flows(frames: torch.Tensor, estimator: Callable = farneback_flow) -> dict:
    """fw (T-1,2,H,W) = flow t -> t+1 and bw = flow t+1 -> t of the INPUT frames (T,3,H,W)."""
    return {"fw": estimator(frames[:-1], frames[1:]), "bw": estimator(frames[1:], frames[:-1])}


def pair_warping_error(a: torch.Tensor, b: torch.Tensor, fw: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
    """(N,) E_warp of pairs: a (N,3,H,W) against b warped back by fw = flow a -> b, over a's pixels
    visible in b by Lai's mask (fw-bw consistency + motion boundaries = ``occlusion_mask(.., "ruder")``)."""
    mask = occlusion_mask(fw, bw, "ruder")                                  # (N,1,H,W)
    return warping_error(a, b, fw, mask, "lai")


def clip_warping_error(S: torch.Tensor, flows: dict) -> torch.Tensor:
    """(T-1,) Lai et al. 2018's E_warp: for t = 0..T-2, the mean over the pixels of S_t visible in S_{t+1}
    of ||S_t - warp(S_{t+1}, fw_t)||^2, the squared RGB distance summed over channels.

    ``flows``: "fw", "bw" (T-1,2,H,W) of the INPUT frames by the independent estimator (``judge_flows``);
    any mask in it is ignored (recomputed with Lai's definition, so every caller is judged alike).
    """
    return pair_warping_error(S[:-1], S[1:], flows["fw"].to(S), flows["bw"].to(S))


def long_term_warping_error(S: torch.Tensor, frames: torch.Tensor, k: int,
                            estimator: Callable = farneback_flow) -> torch.Tensor:
    """(T-k,) E_warp of S_{t-k} against S_t for t = k..T-1, the flows t-k <-> t estimated between the two
    INPUT frames directly (chaining k short flows would add up their errors); k = 1 is ``clip_warping_error``.
    ``estimator(a, b)`` -> flow a -> b (N,2,H,W) in ``flow.warp``'s convention."""
    if not 1 <= k < S.shape[0]:
        raise ValueError(f"k must be in 1..{S.shape[0] - 1} for a clip of {S.shape[0]} frames, got {k}")
    a, b = frames[:-k], frames[k:]                                          # (T-k,3,H,W) each
    return pair_warping_error(S[:-k], S[k:], estimator(a, b).to(S), estimator(b, a).to(S))


# --------------------------------------------------------------------------- fidelity
def uses_msssim(h: int, w: int) -> bool:
    """MS-SSIM's 5 scales fit frames of this size (else ``fidelity_ssim`` falls back to SSIM)."""
    return min(h, w) >= MSSSIM_MIN_SIDE


MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang, Simoncelli & Bovik 2003


def _gaussian(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    return g / g.sum()                                                      # (size,)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid filtering of (N,1,H,W) by the 1-D kernel g along both axes, as shifted sums: on a
    CPU, 1-channel convolutions are several times slower than these additions."""
    k = g.numel()
    H, W = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    row = x[..., :W] * g[0]
    for i in range(1, k):
        row = row.add(x[..., i:i + W], alpha=float(g[i]))
    out = row[..., :H, :] * g[0]
    for i in range(1, k):
        out = out.add(row[..., i:i + H, :], alpha=float(g[i]))
    return out


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, k1: float = 0.01, k2: float = 0.03) -> tuple:
    """(mean SSIM (N,), mean contrast-structure (N,)) of (N,1,H,W) images in [0,1] under an 11-px Gaussian
    window (sigma 1.5), separable. As torchmetrics (the reference implementation the tests compare with):
    the images are reflect-padded by the window's radius, SSIM averaged over every pixel, the
    contrast-structure term over the windows inside the image; variances clamped at 0."""
    g = _gaussian(dtype=x.dtype, device=x.device)
    r = (g.numel() - 1) // 2
    n = x.shape[0]
    stats = torch.cat([x, y, x * x, y * y, x * y])                          # (5N,1,H,W)
    blur = _blur(F.pad(stats, (r, r, r, r), mode="reflect"), g)             # (5N,1,H,W)
    mx, my, xx, yy, xy = blur.split(n)
    vx, vy, cov = (xx - mx * mx).clamp_min(0), (yy - my * my).clamp_min(0), xy - mx * my
    c1, c2 = k1 ** 2, k2 ** 2
    cs = (2 * cov + c2) / (vx + vy + c2)                                     # (N,1,H,W)
    sim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return sim.mean((1, 2, 3)), cs[..., r:-r, r:-r].mean((1, 2, 3))


def fidelity_ssim(S: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """(T,) similarity of S_t to the per-frame stylization R_t on the luma (as video quality measures
    compute it), 1 for identical frames.

    MS-SSIM (Wang, Simoncelli & Bovik 2003: 5 scales with their weights, Gaussian window 11 px sigma 1.5,
    K1 0.01, K2 0.03, 2x average pooling between scales, negative terms clamped at 0) when min(H, W) >=
    ``MSSSIM_MIN_SIDE`` = 176, else single-scale SSIM (Wang et al. 2004, same window): fixed by the frame
    size, so every method on a clip gets the same measure (data range 1). Separable windows: the same
    numbers as torchmetrics' (tests/test_metrics.py), several times faster.
    """
    x, y = luma(S.float()), luma(R.float())                                # (T,1,H,W)
    if not uses_msssim(*S.shape[-2:]):
        return _ssim_terms(x, y)[0]
    out = torch.ones(S.shape[0], device=S.device)
    for i, w in enumerate(MSSSIM_WEIGHTS):
        sim, cs = _ssim_terms(x, y)
        out = out * (sim if i == len(MSSSIM_WEIGHTS) - 1 else cs).clamp_min(0).pow(w)
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out


def perceptual_fidelity(S: torch.Tensor, R: torch.Tensor, net: torch.nn.Module, batch_size: int = 16) -> torch.Tensor:
    """(T,) perceptual distance of S_t to R_t by ``net(x, ref)`` (e.g. ``nets.perceptual.DarknetPerceptual``;
    images in [0,1] if it has ``unit_range``, else [-1,1], LPIPS's convention), 0 for identical frames."""
    unit = getattr(net, "unit_range", False)
    out = []
    with torch.no_grad():
        for i in range(0, S.shape[0], batch_size):
            s, r = S[i:i + batch_size].float(), R[i:i + batch_size].float()
            out.append((net(s, r) if unit else net(2 * s - 1, 2 * r - 1)).flatten())
    return torch.cat(out)


# --------------------------------------------------------------------------- sharpness
def luma(x: torch.Tensor) -> torch.Tensor:
    """(T,1,H,W) ITU-R 601 luma of RGB frames (T,3,H,W)."""
    return (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def sharpness(S: torch.Tensor) -> torch.Tensor:
    """(T,) high-frequency energy: the variance of the 4-neighbour Laplacian of the luma over the interior
    pixels (no padding: border pixels have no full stencil), population variance (Pech-Pacheco et al. 2000)."""
    k = torch.tensor(LAPLACIAN, dtype=torch.float64, device=S.device)[None, None]
    lap = F.conv2d(luma(S.double()), k)                                     # (T,1,H-2,W-2)
    return lap.flatten(1).var(1, correction=0).to(S.dtype)


def relative_sharpness(S: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """() sharpness of S relative to R: the geometric mean over frames of sharpness(S_t) / sharpness(R_t);
    1 = as sharp as the per-frame stylization, < 1 blurrier. Geometric, as ratios are: a frame twice as
    sharp and one half as sharp average to 1 (the arithmetic mean would say 1.25)."""
    ratio = (sharpness(S).double() + EPS) / (sharpness(R).double() + EPS)  # (T,)
    return ratio.log().mean().exp().to(S.dtype)


__all__ = ["warping_error", "edge_correlation", "WARP_ERRORS", "judge_flows", "pair_warping_error",
           "clip_warping_error", "long_term_warping_error", "uses_msssim", "fidelity_ssim", "perceptual_fidelity",
           "luma", "sharpness", "relative_sharpness", "MSSSIM_MIN_SIDE"]
