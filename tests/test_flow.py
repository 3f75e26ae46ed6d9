"""Flow: warping convention, occlusion masks, Sintel ground truth, RAFT wrapper, clip-flow cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vstlib import flow, paths
from vstlib.config import get_config
from vstlib.errors import InputError
from vstlib.video import clips
from vstlib.video.io import load_image
from vstlib.video.prepare import prepare
from vstlib.video.synthetic import PHOTOS, make_synthetic_clip


def masked_mse(a, b, m):
    return float((((a - b) ** 2).mean(1, keepdim=True) * m).sum() / m.sum())


def smooth_image(h=40, w=50, n=1):
    y, x = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    img = torch.stack([torch.sin(x / 4 + y / 9), torch.cos(y / 3), torch.sin((x - y) / 6)])
    return (0.5 + 0.4 * img)[None].repeat(n, 1, 1, 1)


def const_flow(u, v, h=40, w=50, n=1):
    return torch.tensor([u, v]).float().view(1, 2, 1, 1).expand(n, 2, h, w).clone()


# --------------------------------------------------------------------------- warp
def test_warp_integer_translation_exact():
    img = torch.rand(2, 3, 20, 30)
    out = flow.warp(img, const_flow(3, -2, 20, 30, 2))  # sample at (x+3, y-2)
    assert torch.allclose(out[:, :, 2:, :-3], img[:, :, :-2, 3:], atol=1e-6)
    # zero flow is the identity
    assert torch.allclose(flow.warp(img, torch.zeros(2, 2, 20, 30)), img, atol=1e-6)


def test_warp_subpixel_translation_matches_bilinear():
    img = smooth_image()
    out = flow.warp(img, const_flow(0.25, 0.5))
    # bilinear by hand at (x+0.25, y+0.5)
    want = (0.75 * 0.5 * img[..., :-1, :-1] + 0.25 * 0.5 * img[..., :-1, 1:]
            + 0.75 * 0.5 * img[..., 1:, :-1] + 0.25 * 0.5 * img[..., 1:, 1:])
    assert torch.allclose(out[..., :-1, :-1], want, atol=1e-5)


def test_warp_follows_convention_and_sign_matters():
    """I1(x) = I0(x - d): fw = +d, warp(I1, fw) == I0 away from the borders; -d does not."""
    full = smooth_image(60, 70)
    i0, i1 = full[..., 10:50, 10:60], full[..., 10 - 3:50 - 3, 10 - 2:60 - 2]  # content moves by (+2,+3)
    fw = const_flow(2, 3)
    inner = (slice(None), slice(None), slice(0, 36), slice(0, 47))
    assert torch.allclose(flow.warp(i1, fw)[inner], i0[inner], atol=1e-5)
    assert (flow.warp(i1, -fw)[inner] - i0[inner]).abs().max() > 0.05
    assert (flow.warp(i1, fw.flip(1))[inner] - i0[inner]).abs().max() > 0.05  # axis swap


def test_warp_zeros_padding_outside():
    img = torch.ones(1, 1, 8, 8)
    out = flow.warp(img, const_flow(20, 0, 8, 8), padding_mode="zeros")
    assert out.abs().max() == 0
    assert torch.allclose(flow.warp(img, const_flow(20, 0, 8, 8)), img)  # border default


# --------------------------------------------------------------------------- occlusion
def test_occlusion_mask_translation_marks_leaving_pixels():
    fw, bw = const_flow(3, 0, 10, 12), const_flow(-3, 0, 10, 12)
    for method in ("sundaram", "simple"):
        m = flow.occlusion_mask(fw, bw, method)
        assert m.shape == (1, 1, 10, 12) and set(m.unique().tolist()) <= {0.0, 1.0}
        assert m[..., :9].min() == 1 and m[..., 9:].max() == 0  # x + 3 > 11 leaves the frame
    # inconsistent backward flow fails the check
    assert flow.occlusion_mask(fw, const_flow(3, 0, 10, 12)).sum() == 0
    with pytest.raises(ValueError):
        flow.occlusion_mask(fw, bw, "nope")


def test_with_masks_makes_the_masks_asked():
    """A 3 px shift right: frame t's last 3 columns leave (mask_fw), frame t+1's first 3 come from
    outside (mask_bw); asked for "bw" alone (`vst stylize`), the same mask_bw and no mask_fw."""
    fw, bw = const_flow(3, 0, 10, 12), const_flow(-3, 0, 10, 12)
    both = flow.with_masks(fw, bw)
    assert both["mask_fw"][..., 9:].max() == 0 and both["mask_bw"][..., :3].max() == 0
    assert both["mask_bw"][..., 3:].min() == 1
    one = flow.with_masks(fw, bw, masks=("bw",))
    assert set(one) == {"fw", "bw", "mask_bw"} and torch.equal(one["mask_bw"], both["mask_bw"])


def test_occlusion_sundaram_tolerance_grows_with_motion():
    # fw 20 px, bw -18.5 px: 1.5 px inconsistency; simple fails, Sundaram (0.01*(400+342)+0.5=7.9 > 2.25) passes
    fw, bw = const_flow(20, 0, 8, 40), const_flow(-18.5, 0, 8, 40)
    assert flow.occlusion_mask(fw, bw, "sundaram")[..., :19].min() == 1
    assert flow.occlusion_mask(fw, bw, "simple").max() == 0


@pytest.fixture(scope="module")
def synthetic_clips():
    return {n: make_synthetic_clip(n, 6, 64) for n in PHOTOS}


@pytest.mark.parametrize("method", ["sundaram", "simple"])
def test_occlusion_mask_matches_synthetic_masks(synthetic_clips, method):
    for name, clip in synthetic_clips.items():
        fw, bw = torch.from_numpy(clip["fw"]), torch.from_numpy(clip["bw"])
        for mine, exact in ((flow.occlusion_mask(fw, bw, method), clip["mask_fw"]),
                            (flow.occlusion_mask(bw, fw, method), clip["mask_bw"])):
            exact = torch.from_numpy(exact)
            agree = float((mine == exact).float().mean())
            assert agree > 0.97, (name, method, agree)
            occluded = exact == 0
            assert float((mine[occluded] == 0).float().mean()) > 0.7  # finds the real occlusions
            assert exact.mean() < 0.99  # there is something to find


# --------------------------------------------------------------------------- Sintel
SINTEL_FIGS = {"easy": (0.0003, 0.005), "medium": (0.0006, 0.006), "hard": (0.0018, 0.012)}


@pytest.mark.parametrize("level", list(SINTEL_FIGS))
def test_sintel_gt_flow_warps_back(level):
    d = paths.SINTEL / "clean" / level
    if not (d / "gt" / "frame_0002.flo").exists():
        pytest.skip(f"Sintel samples not found at {d}")
    f = torch.from_numpy(flow.read_flo(d / "gt" / "frame_0002.flo"))[None]
    i2 = load_image(d / "frame_0002.png")
    i3 = load_image(d / "frame_0003.png")
    assert f.shape == (1, 2, 436, 1024) and i2.shape == (1, 3, 436, 1024)
    occ = load_image(d / "gt" / "occlusions" / "frame_0002.png")[:, :1]
    inv = load_image(d / "gt" / "invalid" / "frame_0002.png")[:, :1]
    m = ((occ < 0.5) & (inv < 0.5)).float()
    warped, still = SINTEL_FIGS[level]
    mse = masked_mse(flow.warp(i3, f), i2, m)
    none = masked_mse(i3, i2, m)
    assert mse < 1.5 * warped, mse
    assert 0.5 * still < none < 1.5 * still, none
    assert mse < none / 4
    assert masked_mse(flow.warp(i3, -f), i2, m) > 3 * mse      # wrong sign
    assert masked_mse(flow.warp(i3, f.flip(1)), i2, m) > 3 * mse  # u/v swapped


def test_read_flo_roundtrip_and_bad_magic(tmp_path):
    f = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
    p = tmp_path / "a.flo"
    with open(p, "wb") as fh:
        np.array([202021.25], "<f4").tofile(fh)
        np.array([7, 5], "<i4").tofile(fh)
        f.transpose(1, 2, 0).astype("<f4").tofile(fh)
    assert np.array_equal(flow.read_flo(p), f)
    bad = tmp_path / "bad.flo"
    assert p.read_bytes()[:4] == b"PIEH"  # the magic float, as text
    bad.write_bytes(b"HEIP" + p.read_bytes()[4:])
    with pytest.raises(InputError, match="bad.flo"):
        flow.read_flo(bad)
    short = tmp_path / "short.flo"
    short.write_bytes(p.read_bytes()[:40])
    with pytest.raises(InputError, match="short.flo"):
        flow.read_flo(short)
    with pytest.raises(InputError, match="missing.flo"):
        flow.read_flo(tmp_path / "missing.flo")


def test_mean_motion():
    assert flow.mean_motion(const_flow(3, 4, 5, 5, 2)) == pytest.approx(5.0)
    assert flow.mean_motion(np.zeros((1, 2, 3, 3), np.float32)) == 0.0


# --------------------------------------------------------------------------- RAFT
class FakeRaft(torch.nn.Module):
    """Records inputs; returns the first two channels of image a as 'flow' (checks pad/crop/scale)."""

    def __init__(self, const=None):
        super().__init__()
        self.const, self.seen = const, []

    def forward(self, a, b, num_flow_updates=12):
        self.seen.append((tuple(a.shape), float(a.min()), float(a.max())))
        if self.const is not None:
            return [torch.tensor(self.const).float().view(1, 2, 1, 1).expand(a.shape[0], 2, *a.shape[-2:])]
        return [a[:, :2].clone()]


def test_estimate_flow_pads_and_crops(monkeypatch):
    fake = FakeRaft()
    monkeypatch.setattr(flow, "get_raft", lambda *a, **k: fake)
    frames = torch.rand(5, 3, 130, 141)
    out = flow.estimate_flow(frames, frames.flip(0), batch_size=2)
    assert out.shape == (5, 2, 130, 141)
    assert torch.allclose(out, frames[:, :2] * 2 - 1, atol=1e-6)  # [-1,1] input, top-left kept
    assert [s[0] for s in fake.seen] == [(2, 3, 136, 144), (2, 3, 136, 144), (1, 3, 136, 144)]
    assert min(s[1] for s in fake.seen) >= -1 and max(s[2] for s in fake.seen) <= 1


def test_estimate_flow_upsamples_small_frames_and_rescales(monkeypatch):
    fake = FakeRaft(const=(8.0, 4.0))
    monkeypatch.setattr(flow, "get_raft", lambda *a, **k: fake)
    out = flow.estimate_flow(torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48))
    (shape, _, _), = fake.seen
    h2, w2 = shape[-2:]
    assert min(h2, w2) >= flow.RAFT_MIN_SIZE and h2 % 8 == 0 and w2 % 8 == 0
    assert out.shape == (2, 2, 32, 48)
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 8.0 * 48 / w2))
    assert torch.allclose(out[:, 1], torch.full_like(out[:, 1], 4.0 * 32 / h2))


def test_raft_random_weights_odd_size_and_batching():
    a, b = torch.rand(2, 3, 70, 90), torch.rand(2, 3, 70, 90)
    out = flow.estimate_flow(a, b, iters=2, batch_size=2)
    assert out.shape == (2, 2, 70, 90) and out.dtype == torch.float32 and torch.isfinite(out).all()
    one = torch.cat([flow.estimate_flow(a[i:i + 1], b[i:i + 1], iters=2) for i in range(2)])
    assert torch.allclose(out, one, atol=1e-4)
    assert flow.get_raft("raft_small") is flow.get_raft("raft_small")  # built once
    assert out.abs().mean() > 0  # the random net does produce something


def test_raft_minimum_size_is_real():
    """The documented minimum: RAFT itself refuses 120 px, accepts 128 px."""
    net = flow.get_raft("raft_small")
    with torch.no_grad(), pytest.raises(ValueError, match="too small"):
        net(torch.zeros(1, 3, 120, 128), torch.zeros(1, 3, 120, 128), num_flow_updates=1)


# --------------------------------------------------------------------------- clip flows
def test_clip_flows_raft_cached(vst_home, monkeypatch):
    cfg = get_config("smoke", flow={"source": "raft", "raft_iters": 1}, train={"device": "cpu"})
    frames = torch.rand(3, 3, 32, 32)
    calls = []
    real = flow.estimate_flow

    def counting(*a, **k):
        calls.append(a[0].shape[0])
        return real(*a, **k)

    monkeypatch.setattr(flow, "estimate_flow", counting)
    out = clips.clip_flows(cfg, "clipA", frames)
    assert calls == [2, 2]  # one batched call per direction
    assert out["fw"].shape == (2, 2, 32, 32) and out["bw"].shape == (2, 2, 32, 32)
    assert out["mask_fw"].shape == (2, 1, 32, 32) and out["mask_bw"].dtype == torch.float32
    cache = clips.flow_cache_path(cfg, "clipA")
    assert cache.exists() and cache.is_relative_to(paths.cache_dir("smoke"))
    assert torch.equal(out["mask_fw"], flow.occlusion_mask(out["fw"], out["bw"], "sundaram"))

    monkeypatch.setattr(flow, "estimate_flow", lambda *a, **k: pytest.fail("cache not used"))
    again = clips.clip_flows(cfg, "clipA")  # no frames needed: read from cache
    for k in out:
        assert torch.equal(out[k], again[k])
    # another occlusion setting or frame size is another cache entry; another style image is not
    assert clips.flow_cache_path(cfg.override(flow={"occlusion": "simple"}), "clipA") != cache
    assert clips.flow_cache_path(cfg.override(data={"size": 48}), "clipA") != cache
    assert clips.flow_cache_path(cfg.override(data={"style": "other.png"}), "clipA") == cache


def test_clip_flows_exact_reads_prepared(vst_home):
    cfg = get_config("smoke", data={"n_frames": 3, "size": 32, "synthetic_images": ["coffee", "rocket"],
                                    "motion_threshold": 0.0})
    prepare(cfg)
    out = clips.clip_flows(cfg, "coffee")
    clip = make_synthetic_clip("coffee", 3, 32)
    assert np.array_equal(out["fw"].numpy(), clip["fw"]) and np.array_equal(out["mask_bw"].numpy(), clip["mask_bw"])
    with pytest.raises(InputError, match="vst prepare"):
        clips.clip_flows(cfg, "nope")


def test_pretrained_raft_offline_gives_one_clear_error(tmp_path, monkeypatch):
    from vstlib.errors import MissingWeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="raft"):
        flow.estimate_flow(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), weights="DEFAULT")
    assert ("raft_small", "DEFAULT") not in flow._MODELS


def test_occlusion_ruder_adds_motion_boundaries():
    """Analytic flow with a motion boundary: columns x < 8 move 3 px right, x >= 8 stand still
    (backward flow = -forward flow). Central differences of u are -1.5 at columns 7 and 8 only, so
    |grad u|^2 = 2.25 > 0.01|w|^2 + 0.002 there: "ruder" = "sundaram" with columns 7 and 8 occluded."""
    from vstlib.flow import motion_boundary, occlusion_mask

    fw = torch.zeros(1, 2, 8, 16)
    fw[:, 0, :, :8] = 3.0
    bw = -fw
    boundary = motion_boundary(fw)[0, 0]
    assert boundary[:, 7].all() and boundary[:, 8].all()
    assert not boundary[:, :7].any() and not boundary[:, 9:].any()
    sund = occlusion_mask(fw, bw, "sundaram")
    ruder = occlusion_mask(fw, bw, "ruder")
    expect = sund.clone()
    expect[..., 7:9] = 0
    assert torch.equal(ruder, expect)
    assert sund[..., 8].all()                                  # the boundary term is what removes column 8


def test_dis_flow_of_a_pair_does_not_depend_on_its_batch():
    """One reused DIS object carries state from pair to pair on small frames (0.18 px at 40 px, fast
    preset): each pair's flow must be the same alone as in a batch, or chunking a video changes it."""
    from vstlib.stylize import frame_chunks

    x = next(frame_chunks(paths.ASSETS / "clips" / "woman-running.mp4", 40, chunk=6))     # (6,3,40,w)
    for preset in ("fast", "medium"):
        batch = flow.dis_flow(x[:-1], x[1:], preset)
        alone = torch.cat([flow.dis_flow(x[i:i + 1], x[i + 1:i + 2], preset) for i in range(len(x) - 1)])
        assert torch.equal(batch, alone) and batch.abs().max() > 0.5, preset
