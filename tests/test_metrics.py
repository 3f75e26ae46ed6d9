"""The evaluation's judge: the Farneback flow, against a known shift and Sintel's ground truth."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vstlib import data, flow, paths
from vstlib.config import get_config


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
    out = flow.get_estimator("farneback")(clip, get_config("cpu").flow)
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
    i2, i3 = data.load_image(d / "frame_0002.png"), data.load_image(d / "frame_0003.png")
    valid = (data.load_image(d / "gt" / "invalid" / "frame_0002.png")[:, :1] < 0.5).float()
    epe = lambda f: float((torch.linalg.vector_norm(f - gt, dim=1, keepdim=True) * valid).sum() / valid.sum())
    f = flow.farneback_flow(i2, i3)
    still = epe(torch.zeros_like(gt))
    assert math.isfinite(epe(f)) and epe(f) == pytest.approx(FARNEBACK_EPE[level], rel=0.15)
    assert epe(f) < (0.85 if level == "hard" else 0.4) * still               # hard: large motion, 3 levels
    assert epe(-f) > 1.2 * still                                             # the sign is flow.py's
