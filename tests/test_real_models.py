"""The real vendored models do what they were trained to do (offline: they read vstlib/assets only).

Known values were measured with the vendored fp16 weights on this repository's CPU build (torch 2.14,
opencv-python-headless 5.0); the Sintel checks read ../shared and skip cleanly without it.
"""
from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vstlib import flow, paths
from vstlib.errors import InputError
from vstlib.evaluation.metrics import warping_error
from vstlib.flow import dis_flow
from vstlib.nets import darknet, faststyle, taef2
from vstlib.nets.weights import load_weights
from vstlib.video.io import load_image, read_frames, to_tensor
from vstlib.video.resize import resize_uint8

CLIP = paths.ASSETS / "clips" / "wolf.mp4"


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def clip():
    return to_tensor(read_frames(CLIP))                     # (20,3,256,256)


@pytest.fixture(scope="module")
def wave():
    return faststyle.load_faststyle("wave")


@pytest.fixture(scope="module")
def photo():
    """scikit-image's astronaut (a known photo), short side 256, centre crop: (1,3,256,256)."""
    import skimage.data

    return to_tensor(resize_uint8(skimage.data.astronaut(), 256))[None]


def psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def sobel_magnitude(x):
    """(N,3,H,W) -> (N,H-2,W-2) gradient magnitude of the luma (valid region only)."""
    g = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx, gy = F.conv2d(g, k.view(1, 1, 3, 3)), F.conv2d(g, k.t().reshape(1, 1, 3, 3))
    return torch.sqrt(gx ** 2 + gy ** 2)[:, 0]


def corr(a, b):
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


# --------------------------------------------------------------------------- vendored files
def test_vendored_assets_are_listed_small_and_intact():
    text = (paths.ASSETS / "PROVENANCE.md").read_text()
    files = sorted(p for p in paths.ASSETS.rglob("*") if p.is_file() and p.name != "PROVENANCE.md")
    assert len(files) == 52        # 12 weights, 7 + 16 (eval) clips, 5 + 12 (eval) paintings
    listed = dict(re.findall(r"^\| (\S+) \|.*\| `([0-9a-f]{64})` \|$", text, re.M))
    assert sorted(listed) == sorted(p.relative_to(paths.ASSETS).as_posix() for p in files)
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == listed[p.relative_to(paths.ASSETS).as_posix()], p
    total = sum(p.stat().st_size for p in files)
    assert total < 40e6, total


def _damaged_copy(tmp_path, how):
    src = faststyle.weight_path("wave")
    p = tmp_path / "faststyle_wave.safetensors"
    shutil.copyfile(src, p)
    raw = bytearray(p.read_bytes())
    if how == "flip":
        raw[-1000] ^= 0xFF                                             # inside the tensor data
    elif how == "truncate":
        raw = raw[: len(raw) // 2]
    elif how == "garbage":
        raw = bytearray(b"not a safetensors file" * 10)
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize("how", ["flip", "truncate", "garbage", "missing"])
def test_damaged_weight_file_is_one_line_error(tmp_path, how):
    p = tmp_path / "faststyle_wave.safetensors" if how == "missing" else _damaged_copy(tmp_path, how)
    with pytest.raises(InputError) as err:
        faststyle.load_faststyle("wave", path=p)
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg and "python scripts/vendor_assets.py" in msg, msg


def test_weight_file_of_another_network_is_refused():
    with pytest.raises(InputError, match="do not match the architecture"):
        load_weights(darknet.weight_path(), "fast style network", faststyle.tf_shapes())


# --------------------------------------------------------------------------- TAEF2
def test_taef2_round_trip_of_a_real_frame(clip):
    ae = taef2.load_taef2()
    x = clip[:1]
    with torch.no_grad():
        z = ae.encode(x)
        rec = ae.decode(z, x.shape[-2:])
    assert z.shape == (1, 32, 32, 32)
    assert psnr(rec, x) >= 25                                          # measured 33.7 dB
    # the same architecture with random weights reconstructs nothing (the weights are what work)
    torch.manual_seed(0)
    with torch.no_grad():
        assert psnr(taef2.TAEF2()(x), x) < 15


def test_taef2_keeps_any_size():
    ae = taef2.load_taef2()
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        assert ae.encode(x).shape == (1, 32, 5, 7) and ae(x).shape == x.shape


# --------------------------------------------------------------------------- Darknet-tiny
def test_darknet_classifies_chelsea_as_a_cat():
    import skimage.data

    net = darknet.load_darknet()
    cat = to_tensor(skimage.data.chelsea())[None]                 # (1,3,300,451)
    with torch.no_grad():
        p = net(cat).softmax(-1)[0]
    top = p.topk(5).indices.tolist()
    # ILSVRC devkit order (Darknet's labels list): 7 Egyptian cat, 54 tiger cat
    assert top[0] == darknet.EGYPTIAN_CAT == 7, top
    assert 54 in top[:3]
    assert float(p[7]) == pytest.approx(0.638, abs=0.03)              # measured


def test_darknet_features_and_embedding():
    net = darknet.load_darknet()
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        f = net.features(x, ["leaky_re_lu_1", "leaky_re_lu_6", "leaky_re_lu_15"])
        e = net.embed(x)
    assert f["leaky_re_lu_1"].shape == (2, 16, 64, 80)
    assert f["leaky_re_lu_6"].shape == (2, 128, 16, 20)                # after two 2x2 pools
    assert f["leaky_re_lu_15"].shape == (2, 128, 4, 5) and e.shape == (2, 128)
    assert torch.allclose(e, f["leaky_re_lu_15"].mean((-2, -1)))
    with pytest.raises(KeyError, match="unknown Darknet-tiny layers"):
        net.features(x, ["conv2d_1"])


# --------------------------------------------------------------------------- fast style network
def test_same_padding_is_tensorflows():
    assert faststyle.same_pad(256, 3, 2) == (0, 1)                     # asymmetric: bottom/right only
    assert faststyle.same_pad(255, 3, 2) == (1, 1)
    assert faststyle.same_pad(256, 9, 1) == (4, 4)


def test_wave_network_paints_the_photo(wave, photo):
    with torch.no_grad():
        out = wave(photo)
    assert out.shape == photo.shape
    # the painting keeps the photo's structure: edge maps correlate (measured 0.565;
    # a random network's output: 0.057)
    c = corr(sobel_magnitude(out), sobel_magnitude(photo))
    assert c > 0.45, c
    torch.manual_seed(0)
    rnd = faststyle.FastStyleNet()
    for layer in rnd.layers:
        torch.nn.init.normal_(layer.weight, std=0.05)
    with torch.no_grad():
        assert corr(sobel_magnitude(rnd(photo)), sobel_magnitude(photo)) < c - 0.3
    # ... and takes the painting's colours: the mean colour moves towards Hokusai's wave
    # (distance of mean RGB to the painting's: photo 0.285, output 0.080)
    painting = load_image(paths.ASSETS / "styles" / "wave.jpg")
    m_out, m_photo, m_paint = (t.mean((0, 2, 3)) for t in (out, photo, painting))
    assert torch.dist(m_out, m_paint) < 0.5 * torch.dist(m_photo, m_paint)
    # regression pin (vendored fp16 weights, input scaled to [0,255])
    assert [round(v, 3) for v in out.mean((0, 2, 3)).tolist()] == pytest.approx(WAVE_MEAN, abs=2e-3)


WAVE_MEAN = [0.547, 0.577, 0.535]                                      # measured


def test_input_scaling_is_pinned(wave, photo):
    """Instance norm after the bias-free first conv makes [0,1] and [0,255] inputs agree up to eps."""
    assert faststyle.IN_SCALE == 255.0
    with torch.no_grad():
        a = wave(photo)
        old = faststyle.IN_SCALE
        try:
            faststyle.IN_SCALE = 1.0
            b = wave(photo)
        finally:
            faststyle.IN_SCALE = old
    assert (a - b).abs().mean() < 2e-3


def test_odd_sizes_keep_their_shape(wave):
    with torch.no_grad():
        assert wave(torch.rand(1, 3, 37, 50)).shape == (1, 3, 37, 50)


# --------------------------------------------------------------------------- DIS flow
SINTEL_EPE = {"easy": 0.341, "medium": 1.639, "hard": 23.22}            # DIS medium, all valid pixels


@pytest.mark.parametrize("level", list(SINTEL_EPE))
def test_dis_flow_on_sintel(level):
    d = paths.SINTEL / "clean" / level
    if not (d / "gt" / "frame_0002.flo").exists():
        pytest.skip(f"Sintel samples not found at {d}")
    gt = torch.from_numpy(flow.read_flo(d / "gt" / "frame_0002.flo"))[None]
    i2, i3 = load_image(d / "frame_0002.png"), load_image(d / "frame_0003.png")
    valid = (load_image(d / "gt" / "invalid" / "frame_0002.png")[:, :1] < 0.5).float()
    f = dis_flow(i2, i3)
    assert f.shape == gt.shape and f.dtype == torch.float32
    epe = float((torch.linalg.vector_norm(f - gt, dim=1, keepdim=True) * valid).sum() / valid.sum())
    still = float((torch.linalg.vector_norm(gt, dim=1, keepdim=True) * valid).sum() / valid.sum())
    assert epe == pytest.approx(SINTEL_EPE[level], rel=0.15), epe
    assert epe < still                                                 # better than no motion at all
    wrong = float((torch.linalg.vector_norm(-f - gt, dim=1, keepdim=True) * valid).sum() / valid.sum())
    assert wrong > 1.5 * still                                         # the sign is flow.py's
    # flow.warp convention: warp(frame b, flow a->b) ~= frame a
    mse = lambda w: float((((w - i2) ** 2).mean(1, keepdim=True) * valid).sum() / valid.sum())
    assert mse(flow.warp(i3, f)) < mse(flow.warp(i3, -f)) / 3


# --------------------------------------------------------------------------- flicker
def test_per_frame_stylization_flickers_more_than_the_input(clip, wave):
    x = clip[:5]
    fw, bw = dis_flow(x[:-1], x[1:]), dis_flow(x[1:], x[:-1])
    m = flow.occlusion_mask(fw, bw)
    assert 0.5 < float(m.mean()) <= 1
    with torch.no_grad():
        s = wave(x)
    we_in = float(warping_error(x[:-1], x[1:], fw, m).mean())
    we_pf = float(warping_error(s[:-1], s[1:], fw, m).mean())
    assert we_pf >= 2 * we_in, (we_pf, we_in)


# --------------------------------------------------------------------------- backbone draft
def test_faststyle_backbone_latents_and_differentiable_render():
    from vstlib.backbones.faststyle import FastStyle

    bb = FastStyle("wave", batch_size=2)
    frames = torch.rand(3, 3, 40, 56)
    out = bb.stylize(frames, style=None)
    L = bb.policy_latents(out)
    assert L.shape == (3, bb.latent_channels, 5, 7) and bb.latent_channels == 32
    assert out.per_frame.shape == out.images.shape == frames.shape
    idx = torch.tensor([0, 2])
    delta = torch.zeros_like(L[idx], requires_grad=True)
    img = bb.render(L[idx] + delta, out, idx)
    assert torch.allclose(img.detach(), out.images[idx], atol=1e-5)   # D(L_t) is the baseline
    img.mean().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    with pytest.raises(InputError, match="wave\\|udnie\\|scream\\|wreck"):
        FastStyle("starry")


# --------------------------------------------------------------------------- cpu profile wiring
def test_dis_is_a_registered_flow_estimator():
    """cfg.flow.source="dis" on a texture translated by (+3, +1) px: fw ~ (3, 1), bw ~ (-3, -1)."""
    from vstlib.config import get_config
    from vstlib.flow import FLOW_ESTIMATORS

    assert "dis" in FLOW_ESTIMATORS
    g = torch.Generator().manual_seed(0)
    big = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(96, 96), mode="bicubic",
                                          align_corners=False).clamp(0, 1)
    frames = torch.cat([big[..., 10:74, 10:74], big[..., 9:73, 7:71]])           # content moves right 3, down 1
    out = FLOW_ESTIMATORS.pick("dis")(frames, get_config("cpu").flow)
    assert set(out) == {"fw", "bw", "mask_fw", "mask_bw"} and out["fw"].shape == (1, 2, 64, 64)
    inner = (slice(None), slice(None), slice(12, 52), slice(12, 52))
    assert torch.allclose(out["fw"][inner].median(-1).values.median(-1).values, torch.tensor([[3.0, 1.0]]), atol=0.3)
    assert torch.allclose(out["bw"][inner].median(-1).values.median(-1).values, torch.tensor([[-3.0, -1.0]]), atol=0.3)
    assert out["mask_fw"][inner].mean() > 0.9


def test_darknet_feature_networks():
    """Registered by name for rewards and Table 2; the perceptual distance (inputs in [0,1]) is 0 on
    identical images and grows with distortion; the style network's features are the network's own."""
    from vstlib.nets.darknet import load_darknet
    from vstlib.nets.perceptual import (
        CONTENT_NETS,
        EMBEDDERS,
        STYLE_NETS,
        DarknetPerceptual,
    )

    assert {"darknet"} <= set(STYLE_NETS) & set(CONTENT_NETS) & set(EMBEDDERS)
    import skimage.data

    x = torch.from_numpy(skimage.data.chelsea()[:128, :160].copy()).permute(2, 0, 1)[None].float() / 255
    want = load_darknet().features(x, ("leaky_re_lu_6",))["leaky_re_lu_6"]
    got = STYLE_NETS["darknet"](None, "cpu")(x, ("leaky_re_lu_6",))["leaky_re_lu_6"]
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    d = DarknetPerceptual()
    g = torch.Generator().manual_seed(0)
    near = (x + 0.025 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    far = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert d(x, x).abs().max() < 1e-6
    assert 0 < d(near, x).item() < d(far, x).item() <= 4
    e = EMBEDDERS["darknet"](None, "cpu")(torch.cat([x, x.flip(-1)]))            # (2,128) unit vectors
    assert e.shape == (2, 128) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert (e[0] @ e[1]) > 0.9                                                     # a mirrored cat is still a cat


def test_presets_policy_channels_follow_the_backbone():
    """Every preset's policy.latent_channels equals its backbone's latent (MicroAST's own: 64)."""
    from vstlib.backbones import make_backbone
    from vstlib.config import PRESETS

    for name, cfg in PRESETS.items():
        if cfg.backbone.name == "diffusest" and cfg.backbone.model_id != "tiny":
            assert cfg.policy.latent_channels == 4, name                          # the SD VAE's latent
            continue
        assert cfg.policy.latent_channels == make_backbone(cfg.backbone).latent_channels, name
    assert PRESETS["cpu"].policy.latent_channels == 64


def test_cpu_preset_names_vendored_inputs():
    """The paper's style (The Starry Night) and the 7 + 16 vendored clips, the 16 held out; the unseen
    styles are held-out paintings, none of them the trained one."""
    from vstlib.config import get_config
    from vstlib.video.prepare import _sources, resolve_path

    cfg = get_config("cpu")
    assert resolve_path(cfg.data.style) == paths.ASSETS / "styles" / "starry_night.jpg"
    src = _sources(cfg, None)
    assert len(src) == 23 and sum(held for *_, held in src) == 16 and "sintel-market-demo" in {c for c, *_ in src}
    assert len(cfg.compare.unseen_styles) >= 3 and cfg.data.style not in cfg.compare.unseen_styles
    assert all(resolve_path(s).is_file() and "styles-eval" in s for s in cfg.compare.unseen_styles)


def test_cpu_full_preset_is_the_cpu_profile_with_every_row():
    """cpu-full differs from cpu in values only, and only in WHAT is run (seeds, rows, grids, the clips'
    length), never in how a run trains or scores. Every learned row gets >= 5 seeds."""
    from dataclasses import replace

    from vstlib.config import get_config
    from vstlib.evaluation.compare import learned_runs

    cpu, full = get_config("cpu"), get_config("cpu-full")
    assert replace(full, profile="cpu", train=cpu.train, compare=cpu.compare, data=cpu.data) == cpu
    assert replace(full.data, n_frames=cpu.data.n_frames) == cpu.data
    assert full.eval == cpu.eval                                              # scored the same way
    assert replace(full.train, ablation_grids=cpu.train.ablation_grids, seeds=cpu.train.seeds) == cpu.train
    assert {"learner", "observation"} <= set(full.train.ablation_grids)
    assert full.compare.methods == () and full.compare.control_seeds == 0      # every row, every seed
    assert len(full.compare.frontier) >= 2
    seeds = {}
    for method, s, _, _ in learned_runs(full):
        seeds.setdefault(method, set()).add(s)
    assert len(seeds) >= 6 and all(len(v) >= 5 for v in seeds.values()), seeds
