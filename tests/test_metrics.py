"""The evaluation's judge: Farneback flow, warping errors, (MS-)SSIM, sharpness, perceptual fidelity, and the
paired bootstrap statistics, each against a hand-computed or analytic value that a wrong sign would miss."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vstlib import flow, paths
from vstlib.config import get_config
from vstlib.evaluation import metrics, stats
from vstlib.evaluation.metrics import clip_warping_error as warping_error
from vstlib.evaluation.metrics import (
    fidelity_ssim,
    judge_flows,
    long_term_warping_error,
    perceptual_fidelity,
    relative_sharpness,
    sharpness,
)
from vstlib.video.io import load_image


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(1,3,h,w) smooth random texture in [0.1,0.9]: enough structure for a flow estimator."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g), size=(h, w), mode="bicubic",
                      align_corners=False)
    return 0.1 + 0.8 * x.clamp(0, 1)


def moving_clip(T: int = 3, d=(3, 2), h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """(T,3,h,w) crops of one texture whose content moves by d = (dx, dy) px each frame:
    frame t at x shows frame 0 at x - t d, so the flow t -> t+1 is +d (``flow.warp``'s convention)."""
    m = 2 + max(abs(d[0]), abs(d[1])) * T
    full = texture(h + 2 * m, w + 2 * m, seed)
    return torch.cat([full[..., m - t * d[1]:m - t * d[1] + h, m - t * d[0]:m - t * d[0] + w] for t in range(T)])


def const_flow(u, v, n, h, w):
    return torch.tensor([u, v]).float().view(1, 2, 1, 1).expand(n, 2, h, w).clone()


def exact_shift_estimator(a, b):
    """Farneback rounded to its median integer vector: the exact flow of a global integer shift."""
    f = flow.farneback_flow(a, b)                                            # (N,2,H,W)
    return f.flatten(2).median(2).values.round()[..., None, None].expand_as(f).clone()


# --------------------------------------------------------------------------- Farneback
def test_farneback_sign_on_a_shifted_texture():
    a, b = moving_clip(2, d=(3, 2), h=64, w=80)[:, None]                     # content moves by (+3,+2)
    f = flow.farneback_flow(a, b)
    assert f.shape == (1, 2, 64, 80) and f.dtype == torch.float32
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert torch.allclose(f[inner].mean((0, 2, 3)), torch.tensor([3.0, 2.0]), atol=0.1)
    err = lambda fl: float((flow.warp(b, fl) - a)[inner].abs().mean())
    assert err(f) < 0.01 and 5 * err(f) < err(-f)                            # warp(b, flow a->b) ~= a
    assert err(f) < err(f.flip(1)) / 5                                       # u is channel 0


def test_farneback_registered_with_masks():
    clip = moving_clip(3, d=(-2, 1))
    out = flow.FLOW_ESTIMATORS.pick("farneback")(clip, get_config("cpu").flow)
    assert set(out) == {"fw", "bw", "mask_fw", "mask_bw"}
    assert out["fw"].shape == (2, 2, 48, 64) and out["mask_bw"].shape == (2, 1, 48, 64)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert torch.allclose(out["fw"][inner].mean((2, 3)), torch.tensor([[-2.0, 1.0]] * 2), atol=0.1)
    assert torch.allclose(out["bw"][inner].mean((2, 3)), torch.tensor([[2.0, -1.0]] * 2), atol=0.1)
    assert out["mask_fw"][..., :, :2].max() == 0                             # x - 2 leaves the frame


FARNEBACK_EPE = {"easy": 0.933, "medium": 3.899, "hard": 24.94}              # all valid pixels, 436x1024


@pytest.mark.parametrize("level", list(FARNEBACK_EPE))
def test_farneback_on_sintel(level):
    d = paths.SINTEL / "clean" / level
    if not (d / "gt" / "frame_0002.flo").exists():
        pytest.skip(f"Sintel samples not found at {d}")
    gt = torch.from_numpy(flow.read_flo(d / "gt" / "frame_0002.flo"))[None]
    i2, i3 = load_image(d / "frame_0002.png"), load_image(d / "frame_0003.png")
    valid = (load_image(d / "gt" / "invalid" / "frame_0002.png")[:, :1] < 0.5).float()
    epe = lambda f: float((torch.linalg.vector_norm(f - gt, dim=1, keepdim=True) * valid).sum() / valid.sum())
    f = flow.farneback_flow(i2, i3)
    still = epe(torch.zeros_like(gt))
    assert math.isfinite(epe(f)) and epe(f) == pytest.approx(FARNEBACK_EPE[level], rel=0.15)
    assert epe(f) < (0.85 if level == "hard" else 0.4) * still               # hard: large motion, 3 levels
    assert epe(-f) > 1.2 * still                                             # the sign is flow.py's


# --------------------------------------------------------------------------- warping error
def test_warping_error_zero_for_a_shift_with_its_exact_flow():
    S = moving_clip(3, d=(3, -2))
    good = {"fw": const_flow(3, -2, 2, 48, 64), "bw": const_flow(-3, 2, 2, 48, 64)}
    e = warping_error(S, good)
    assert e.shape == (2,) and e.abs().max() < 1e-10                         # masks drop the border
    flipped = {"fw": good["bw"], "bw": good["fw"]}                           # the wrong direction
    assert warping_error(S, flipped).min() > 1e-3
    unmasked = ((S[:-1] - flow.warp(S[1:], good["fw"])) ** 2).sum(1).mean((1, 2))
    assert unmasked.min() > 1e-4                                             # the border does matter


def test_warping_error_of_a_constant_colour_change_by_hand():
    """S_1 = shift(S_0) + c: every visible pixel differs by c, so E = c_r^2 + c_g^2 + c_b^2 = 0.0525."""
    S = moving_clip(2, d=(2, 1))
    c = torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)
    S = torch.cat([S[:1], S[1:] + c])
    fl = {"fw": const_flow(2, 1, 1, 48, 64), "bw": const_flow(-2, -1, 1, 48, 64)}
    assert warping_error(S, fl).item() == pytest.approx(0.01 + 0.04 + 0.0025, rel=1e-5)
    assert warping_error(S, {"fw": -fl["fw"], "bw": -fl["bw"]}).item() > 0.06


def test_warping_error_drops_motion_boundaries():
    """Lai's mask also drops motion boundaries (Ruder et al.): the left half still (u = 0), the right
    half moving by 2 px; a made-up difference on the boundary columns 31-32 must not count."""
    b = texture(16, 64)
    fw = torch.zeros(1, 2, 16, 64)
    fw[:, 0, :, 32:] = 2
    bw = torch.zeros(1, 2, 16, 64)
    bw[:, 0, :, 34:] = -2                                                    # consistent where it matters
    a = flow.warp(b, fw)
    a[..., 31:33] += 0.3
    S, fl = torch.cat([a, b]), {"fw": fw, "bw": bw}
    assert warping_error(S, fl).item() < 1e-10
    sundaram = flow.occlusion_mask(fw, bw, "sundaram")                       # without the boundary term
    assert ((a - flow.warp(b, fw)) ** 2 * sundaram).sum() > 0


def test_long_term_warping_error_k1_is_the_short_one():
    frames = moving_clip(4, d=(2, 1))
    S = (frames.flip(1) ** 2 + 0.05 * torch.rand(frames.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    short = warping_error(S, judge_flows(frames))
    assert torch.equal(long_term_warping_error(S, frames, 1), short)
    assert short.shape == (3,) and short.min() > 0


def test_long_term_warping_error_uses_the_direct_flow_t_minus_k_to_t():
    frames = moving_clip(5, d=(2, -1), h=64, w=80)                           # 48x64 is too small for 6 px
    e = long_term_warping_error(frames, frames, 3, exact_shift_estimator)
    assert e.shape == (2,) and e.abs().max() < 1e-10                         # flow 6 px, -3 px, exactly
    backwards = lambda a, b: exact_shift_estimator(b, a)                     # flow t -> t-k instead
    assert long_term_warping_error(frames, frames, 3, backwards).min() > 1e-3
    with pytest.raises(ValueError):
        long_term_warping_error(frames, frames, 5)


# --------------------------------------------------------------------------- fidelity
def ssim_of_constants(a: float, b: float) -> float:
    """SSIM of two flat images: only the luminance term, (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01)^2."""
    c1 = 0.01 ** 2
    return (2 * a * b + c1) / (a * a + b * b + c1)


@pytest.mark.parametrize("size", [(40, 48), (176, 180)])
def test_fidelity_ssim_by_hand(size):
    h, w = size
    ms = metrics.uses_msssim(h, w)
    assert ms == (min(h, w) >= 176)
    R = texture(h, w).repeat(2, 1, 1, 1)
    assert torch.allclose(fidelity_ssim(R, R), torch.ones(2), atol=1e-6)
    # flat 0.5 vs flat 0.6: SSIM = 0.98361; MS-SSIM keeps the luminance term of the coarsest scale only,
    # raised to its weight 0.1333 (contrast-structure terms are 1 on flat images)
    S, R = torch.full((1, 3, h, w), 0.5), torch.full((1, 3, h, w), 0.6)
    want = ssim_of_constants(0.5, 0.6) ** (0.1333 if ms else 1.0)
    assert fidelity_ssim(S, R).item() == pytest.approx(want, abs=1e-5)


def test_fidelity_ssim_falls_with_noise():
    R = texture(48, 64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(R.shape, generator=g)
    s = [fidelity_ssim((R + sd * noise).clamp(0, 1), R).item() for sd in (0.0, 0.02, 0.05, 0.1, 0.2)]
    assert s[0] == pytest.approx(1.0, abs=1e-6) and all(a > b for a, b in zip(s, s[1:])), s


class MeanSquare(torch.nn.Module):
    """A stand-in perceptual distance: mean squared difference of its inputs, (N,1,1,1)."""

    def forward(self, x, ref):
        assert x.min() < -0.5 and x.max() <= 1                               # it was given [-1,1]
        return ((x - ref) ** 2).mean((1, 2, 3)).view(-1, 1, 1, 1)


def test_perceptual_fidelity_maps_to_minus_one_one_and_keeps_order():
    R = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    S = (R + torch.linspace(0, 0.2, 5).view(5, 1, 1, 1)).clamp(0, 1)
    d = perceptual_fidelity(S, R, MeanSquare(), batch_size=2)
    assert d.shape == (5,) and torch.allclose(d, 4 * ((S - R) ** 2).mean((1, 2, 3)))   # 2x scale -> 4x
    assert d[0] == 0 and (d.diff() > 0).all()


def test_perceptual_fidelity_with_darknet():
    from vstlib.nets.perceptual import DarknetPerceptual

    net = DarknetPerceptual()
    R = texture(64, 64).repeat(3, 1, 1, 1)
    noise = torch.randn(R.shape, generator=torch.Generator().manual_seed(0))
    S = (R + torch.tensor([0.0, 0.05, 0.2]).view(3, 1, 1, 1) * noise).clamp(0, 1)
    d = perceptual_fidelity(S, R, net)
    assert d[0] == 0 and 0 < d[1] < d[2]


# --------------------------------------------------------------------------- sharpness
def test_sharpness_of_an_impulse_by_hand():
    """5x5 grey image, 1 at the centre: the Laplacian on the 3x3 interior is -4 at the centre, 1 at its
    4 neighbours, 0 at the corners; mean 0, variance (16 + 4) / 9."""
    x = torch.zeros(1, 3, 5, 5)
    x[..., 2, 2] = 1
    assert sharpness(x).item() == pytest.approx(20 / 9, rel=1e-6)
    red = torch.zeros(1, 3, 5, 5)
    red[:, 0, 2, 2] = 1                                                      # luma 0.299
    assert sharpness(red).item() == pytest.approx(0.299 ** 2 * 20 / 9, rel=1e-6)


def test_sharpness_of_a_checkerboard_and_after_a_blur():
    """0/1 checkerboard: the Laplacian is -4 on the 1s and +4 on the 0s, variance 16 (the image's own
    variance is 0.25: a metric of the wrong quantity fails)."""
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((yy + xx) % 2).float().expand(1, 3, 8, 8)
    assert sharpness(board).item() == pytest.approx(16.0)
    img = texture(48, 64, seed=3) + 0.05 * torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    blurred = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert sharpness(blurred).item() < 0.5 * sharpness(img).item()


def test_relative_sharpness_is_a_geometric_mean():
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((yy + xx) % 2).float().expand(1, 3, 8, 8)
    R = torch.cat([0.25 * board, 0.5 * board])                               # sharpness 1, 4
    assert relative_sharpness(torch.cat([0.5 * board, 0.5 * board]), R).item() == pytest.approx(math.sqrt(4 * 1))
    assert relative_sharpness(R.flip(0), R).item() == pytest.approx(1.0)     # ratios 4 and 1/4
    assert relative_sharpness(R, R).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- statistics
def test_bootstrap_of_a_constant_change_has_zero_width():
    clips, seeds = np.repeat(np.arange(6), 3), np.tile([0, 1, 2], 6)
    mean, lo, hi = stats.paired_bootstrap(np.full(18, -20.0), clips, seeds, n_boot=500)
    assert mean == pytest.approx(-20) and lo == pytest.approx(-20) and hi == pytest.approx(-20)


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    delta, clips, seeds = rng.normal(size=30), np.repeat(np.arange(10), 3), np.tile([0, 1, 2], 10)
    a = stats.paired_bootstrap(delta, clips, seeds, n_boot=300, seed=4)
    assert a == stats.paired_bootstrap(delta, clips, seeds, n_boot=300, seed=4)
    assert a[0] == pytest.approx(delta.mean()) and a[1] < a[0] < a[2]
    assert a[1:] != stats.paired_bootstrap(delta, clips, seeds, n_boot=300, seed=5)[1:]


def test_bootstrap_covers_the_true_mean_most_of_the_time():
    """delta = 5 + clip effect + seed effect (shared by every clip: crossed) + noise; the 95 % interval
    should cover 5 in most of 200 simulated studies (with 3 seeds it undercovers: 88 %). Resampling
    the (clip, seed) pairs as if independent ignores the shared seed effect and covers less often."""
    rng = np.random.default_rng(1)
    n_c, n_s, hits, naive_hits = 20, 3, 0, 0
    clips, seeds = np.repeat(np.arange(n_c), n_s), np.tile(np.arange(n_s), n_c)
    for i in range(200):
        d = 5 + rng.normal(0, 2, n_c)[:, None] + rng.normal(0, 1, n_s)[None] + rng.normal(0, 1, (n_c, n_s))
        _, lo, hi = stats.paired_bootstrap(d.ravel(), clips, seeds, n_boot=400, seed=i)
        hits += lo <= 5 <= hi
        _, lo, hi = stats.paired_bootstrap(d.ravel(), np.arange(n_c * n_s), None, n_boot=400, seed=i)
        naive_hits += lo <= 5 <= hi
    assert hits / 200 >= 0.8 and naive_hits < hits - 40, (hits, naive_hits)     # 176 and 105 of 200


def per_clip_rows() -> pd.DataFrame:
    """2 clips x 2 styles (seen "a", unseen "b"); the reference differs per (clip, style); "policy" is
    0.8x the reference (warp) and 1.5x (ssim) on every pair, over seeds 0 and 1."""
    rows = []
    for clip in ("c0", "c1"):
        for style, seen in (("a", True), ("b", False)):
            ref = {"warp": 1.0 + int(clip[1]) + 10 * (style == "b"), "ssim": 0.2 + 0.1 * int(clip[1])}
            rows.append(dict(method="per_frame", setting="-", seed=np.nan, clip=clip, style=style,
                             seen_style=seen, **ref))
            for seed in (0, 1):
                rows.append(dict(method="policy", setting="w10", seed=seed, clip=clip, style=style, seen_style=seen,
                                 warp=0.8 * ref["warp"], ssim=1.5 * ref["ssim"]))
    return pd.DataFrame(rows)


def test_summary_is_paired_and_method_vs_reference():
    out = stats.summarise(per_clip_rows(), n_boot=200)
    assert list(out["style_group"]) == ["seen", "unseen"] and set(out["method"]) == {"policy"}
    for _, r in out.iterrows():
        assert r["warp_delta"] == pytest.approx(-20) and r["warp_lo"] == pytest.approx(-20)
        assert r["warp_hi"] == pytest.approx(-20)                            # paired: exactly -20 % on every pair
        assert r["ssim_delta"] == pytest.approx(50) and r["ssim_hi"] == pytest.approx(50)
        assert (r["n_clips"], r["n_seeds"]) == (2, 2)
    cols = {"warp_delta", "warp_lo", "warp_hi", "ssim_delta", "ssim_lo", "ssim_hi", "n_clips", "n_seeds"}
    assert cols <= set(out.columns)


def test_summary_needs_the_reference_of_each_pair():
    rows = per_clip_rows()
    rows = rows[~((rows["method"] == "per_frame") & (rows["clip"] == "c1") & (rows["style"] == "b"))]
    with pytest.raises(ValueError, match="c1"):
        stats.summarise(rows, n_boot=50)
