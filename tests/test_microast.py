"""MicroAST (nets/microast.py), the VGG-19 relu3_1 trunk (nets/vgg_r31.py, models "vgg_r31") and the
"microast" backbone, on the vendored weights (offline; the fp32 comparisons read ../shared and skip
without it). Known values were measured on this repository's CPU build with the fp16 weights.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from vstlib import paths
from vstlib.backbones.microast import (
    MicroASTBackbone,
    check_style_image,
    vendored_styles,
)
from vstlib.config import get_config
from vstlib.errors import InputError
from vstlib.nets import microast, vgg_r31
from vstlib.nets.perceptual import CONTENT_NETS, STYLE_NETS
from vstlib.nets.weights import load_weights
from vstlib.rl.rewards import StyleLoss, gram
from vstlib.runtime import fork_rng
from vstlib.video.io import load_image, read_frames, to_tensor
from vstlib.video.resize import resize_uint8

CLIP = paths.ASSETS / "clips" / "wolf.mp4"
STARRY = paths.ASSETS / "styles" / "starry_night.jpg"
SOURCE = paths.SHARED / "assets" / "weights"
GRAM_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


@pytest.fixture(scope="module", autouse=True)
def single_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def net():
    return microast.load_microast()


@pytest.fixture(scope="module")
def vgg():
    return vgg_r31.load_vgg_r31()


@pytest.fixture(scope="module")
def frames():
    return to_tensor(read_frames(CLIP, 3))                    # (3,3,256,256)


@pytest.fixture(scope="module")
def starry():
    return load_image(STARRY, 256)                                # (1,3,256,256)


def gram_distance(vgg, x, style):
    """{layer: ||G(x) - G(style)||_F^2} with G = F F^T / (CHW) (rewards.gram)."""
    fx, fs = vgg(x, GRAM_LAYERS), vgg(style, GRAM_LAYERS)
    return {k: float((gram(fx[k]) - gram(fs[k])).pow(2).sum()) for k in GRAM_LAYERS}


# --------------------------------------------------------------------------- AdaIN
def test_adain_matches_hand_computed_values():
    # channel 0: 1, 2, 3, 6 -> mean 3, unbiased var (4 + 1 + 0 + 9) / 3; channel 1: constant 5
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[5.0, 5.0], [5.0, 5.0]]]])      # (1,2,2,2)
    mean, std = microast.mean_std(x)
    s0, s1 = math.sqrt(14 / 3 + 1e-5), math.sqrt(1e-5)
    assert torch.allclose(mean.flatten(), torch.tensor([3.0, 5.0]))
    assert torch.allclose(std.flatten(), torch.tensor([s0, s1]), rtol=1e-6)
    m_s, sd_s = torch.tensor([10.0, -1.0]).view(1, 2, 1, 1), torch.tensor([2.0, 0.5]).view(1, 2, 1, 1)
    want = torch.tensor([[[10 + 2 * (v - 3) / s0 for v in (1, 2)], [10 + 2 * (v - 3) / s0 for v in (3, 6)]],
                         [[-1.0, -1.0], [-1.0, -1.0]]])[None]
    assert torch.allclose(microast.adain(x, m_s, sd_s), want, atol=1e-5)
    blend = microast.adain(x, m_s, sd_s, alpha=0.25)
    assert torch.allclose(blend, 0.25 * want + 0.75 * x, atol=1e-5)
    assert torch.equal(microast.adain(x, m_s, sd_s, alpha=0.0), x)


# --------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("part,n_params", [("content_encoder", 157_792), ("style_encoder", 157_792),
                                           ("modulator", 2_560), ("decoder", 153_843)])
def test_vendored_microast_parts_match_the_architecture(part, n_params):
    shapes = microast.state_shapes(part)
    sd = load_weights(microast.weight_path(part), part, shapes)         # checks hash, names, shapes
    assert {k: tuple(v.shape) for k, v in sd.items()} == shapes
    assert sum(v.numel() for v in sd.values()) == n_params               # the README's counts


def test_vendored_vgg_r31_matches_the_architecture():
    sd = load_weights(vgg_r31.weight_path(), "vgg", vgg_r31.state_shapes())
    assert sum(v.numel() for v in sd.values()) == 555_340
    # conv1 is the fixed RGB [0,1] -> Caffe BGR * 255 - mean step
    assert torch.equal(sd["conv1.weight"].flatten(), torch.tensor([0, 0, 255, 0, 255, 0, 255, 0, 0.0]))
    # the ImageNet mean in fp16 (ulp 0.0625 at 64..128): off by at most 0.03 / 255 of a pixel value
    assert torch.allclose(sd["conv1.bias"], torch.tensor([-103.939, -116.779, -123.680]), atol=0.032)


def test_damaged_or_wrong_weights_are_one_input_error(tmp_path):
    bad = tmp_path / "decoder.safetensors"
    raw = bytearray(microast.weight_path("decoder").read_bytes())
    raw[-100] ^= 0xFF                                                 # one flipped byte in the tensor data
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="damaged") as err:
        microast.load_microast({"decoder": bad})
    assert str(bad) in str(err.value) and "Fix:" in str(err.value) and "\n" not in str(err.value)
    bad.write_bytes(bytes(raw[:1000]))                                # truncated
    with pytest.raises(InputError, match="unreadable"):
        microast.load_microast({"decoder": bad})
    with pytest.raises(InputError, match="do not match the architecture"):
        microast.load_microast({"decoder": microast.weight_path("style_encoder")})


# --------------------------------------------------------------------------- MicroAST
def test_real_weights_stylize_a_photo_and_random_weights_do_not(net, vgg, frames, starry):
    photo = frames[:1]                                                 # wolf, frame 0, 256x256
    with torch.no_grad():
        out = net.stylize(photo, starry)
        with fork_rng():
            torch.manual_seed(0)
            rand = microast.MicroAST().eval()
        out_rand = rand.stylize(photo, starry)
        d_out, d_photo, d_rand = (gram_distance(vgg, y, starry) for y in (out, photo, out_rand))
    assert out.shape == photo.shape and 0 <= out.min() and out.max() <= 1 and out.std() > 0.1
    for k in GRAM_LAYERS:                                             # every layer moves towards the style
        assert d_out[k] < 0.5 * d_photo[k], (k, d_out, d_photo)
    assert sum(d_out.values()) < 0.25 * sum(d_photo.values()), (d_out, d_photo)
    assert sum(d_rand.values()) > 0.5 * sum(d_photo.values()), (d_rand, d_photo)


def test_odd_sizes_keep_the_input_size_and_render_equals_stylize(net, starry):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 9, 13, generator=g), size=(70, 101), mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    with torch.no_grad():
        y = net.stylize(x, starry)
        code = net.style_code(starry)
        latent = net.latent(net.content_features(x), code)
        r = net.render(latent, x.shape[-2:])
    assert y.shape == x.shape                                         # 70x101 stays 70x101
    assert latent.shape == (2, microast.LATENT_CHANNELS, 18, 26)       # ceil(70/4), ceil(101/4)
    assert torch.equal(r, y)
    assert torch.equal(net.stylize(x[:1], code), y[:1])               # a StyleCode is reusable


@pytest.mark.skipif(not (SOURCE / "microast").is_dir(), reason="../shared/assets (fp32 sources) not present")
def test_fp16_vendored_weights_reproduce_the_fp32_originals(net, frames, starry):
    ref = microast.MicroAST()
    for part in microast.PARTS:
        sd = torch.load(SOURCE / "microast" / f"{part}_iter_160000.pth.tar", map_location="cpu", weights_only=True)
        getattr(ref, part).load_state_dict(sd)
    with torch.no_grad():
        a, b = net.stylize(frames[:1], starry), ref.eval().stylize(frames[:1], starry)
    err = (a - b).abs()
    assert float(err.mean()) < 1e-3 and float(err.max()) < 2e-2, (float(err.mean()), float(err.max()))


# --------------------------------------------------------------------------- VGG relu3_1
def test_vgg_r31_relu3_1_mean_on_chelsea(vgg):
    import skimage.data

    x = to_tensor(resize_uint8(skimage.data.chelsea(), 256))[None]   # short side 256, centre crop
    with torch.no_grad():
        f = vgg(x)
    assert [tuple(f[k].shape[1:]) for k in vgg_r31.LAYERS] == [(64, 256, 256), (64, 256, 256), (128, 128, 128),
                                                               (128, 128, 128), (256, 64, 64)]
    assert abs(float(f["relu3_1"].mean()) - 0.72) < 0.04              # measured 0.704 (README: 0.72)


@pytest.mark.skipif(not (SOURCE / "linearstyle-r31").is_dir(), reason="../shared/assets not present")
def test_vgg_r31_fp16_matches_fp32(vgg, frames):
    ref = vgg_r31.VGGR31()
    ref.load_state_dict(torch.load(SOURCE / "linearstyle-r31" / "vgg_r31.pth", map_location="cpu", weights_only=True))
    with torch.no_grad():
        a, b = vgg(frames[:1])["relu3_1"], ref.eval()(frames[:1])["relu3_1"]
    assert float((a - b).abs().mean()) < 0.01 * float(b.abs().mean())


def test_style_loss_feeds_the_vgg_rgb_in_0_1_and_shares_it_with_the_content_term(vgg, frames):
    """The Gram term sees the network's own features of RGB in [0,1], and the content term uses the
    same instance: one pass over the frames serves both (counted)."""
    cfg = dataclasses.replace(get_config("cpu").reward, style_net="vgg_r31", style_layers=GRAM_LAYERS)
    net = STYLE_NETS["vgg_r31"](cfg, "cpu")
    assert sorted(net.layer_names) == sorted(vgg_r31.LAYERS) and CONTENT_NETS["vgg_r31"](cfg, "cpu").net is net
    loss = StyleLoss(cfg, frames[1:2], "cpu")
    with torch.no_grad():
        got, want = loss.features(frames[:1]), vgg(frames[:1], GRAM_LAYERS)
    for f, k in zip(got, GRAM_LAYERS):
        assert torch.allclose(f, want[k], atol=1e-3, rtol=1e-4), k
    calls = []
    hook = net.conv2.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        x, ref = frames[:1].clone(), frames[1:2].clone()
        loss(x), CONTENT_NETS["vgg_r31"](cfg, "cpu")(x, ref), CONTENT_NETS["vgg_r31"](cfg, "cpu")(x, ref)
    hook.remove()
    assert len(calls) == 2                                               # x once, ref once


def test_perceptual_distance_orders_perturbations(frames):
    import skimage.data

    d = CONTENT_NETS["vgg_r31"](None, "cpu")
    x = frames[:1]
    g = torch.Generator().manual_seed(0)
    noisy = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    shifted = torch.roll(x, 2, dims=-1)
    other = to_tensor(resize_uint8(skimage.data.astronaut(), 256))[None]
    with torch.no_grad():
        vals = [d(2 * x - 1, 2 * y - 1) for y in (x, noisy, shifted, other)]
    assert all(v.shape == (1, 1, 1, 1) for v in vals)
    same, noise, shift, diff = (float(v) for v in vals)
    assert same == 0 and 0 < noise < shift < diff, (same, noise, shift, diff)


# --------------------------------------------------------------------------- the backbone
@pytest.fixture(scope="module")
def small(frames):
    return frames[:, :, :96, :128].contiguous()                        # (3,3,96,128): latents 24x32


@pytest.fixture(scope="module")
def built(tmp_path_factory, small):
    cache = tmp_path_factory.mktemp("microast-cache")
    bb = MicroASTBackbone(batch_size=2, cache_dir=cache)
    style = load_image(STARRY, 128)
    return bb, cache, style, bb.stylize(small, style)


def count_calls(monkeypatch, obj, name):
    calls = []
    fn = getattr(obj, name)
    monkeypatch.setattr(obj, name, lambda *a, **k: calls.append(1) or fn(*a, **k))
    return calls


def test_backbone_output(built, small, net):
    bb, _, style, out = built
    assert bb.latent_channels == 64 and out.per_frame is None
    assert out.latents.shape == (3, 64, 24, 32) and out.images.shape == small.shape
    with torch.no_grad():
        # images = N(I_t) (batches of 2 vs 3 frames: float rounding only)
        assert torch.allclose(out.images, net.stylize(small, style), atol=1e-4)
        assert torch.equal(bb.render(bb.policy_latents(out), out, torch.arange(3)), out.images)


def test_taef2_latent_is_the_round_trip_of_the_stylized_frame(built, small):
    """backbone.latent="taef2": L_t = E(N(I_t)) (32 ch at 1/8), images = D(L_t) and per_frame = N(I_t),
    the same N(I_t) as the native latent's images; the render of the latents is the images."""
    from vstlib.nets.taef2 import load_taef2

    bb, _, style, native = built
    t = MicroASTBackbone(batch_size=2, latent="taef2")
    out = t.stylize(small, style)
    assert t.latent_channels == 32 and out.latents.shape == (3, 32, 12, 16)
    assert torch.allclose(out.per_frame, native.images, atol=1e-5)
    with torch.no_grad():
        ae = load_taef2()
        assert torch.allclose(out.images, ae.decode(ae.encode(native.images), small.shape[-2:]), atol=1e-4)
        assert torch.equal(t.render(out.latents, out, torch.arange(3)), out.images)
    assert not torch.allclose(out.images, out.per_frame, atol=1e-3)           # the round trip changes the frames
    with pytest.raises(InputError, match="backbone.latent"):
        MicroASTBackbone(latent="nope")


def test_backbone_render_is_differentiable(built):
    bb, _, _, out = built
    lat = bb.policy_latents(out)[1:2].clone().requires_grad_(True)
    with torch.enable_grad():
        y = bb.render(lat, out, torch.tensor([1]))
        (grad,) = torch.autograd.grad(y.mean(), lat)
    assert grad.shape == lat.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_backbone_disk_cache_is_used_and_keyed_by_style(built, small, monkeypatch):
    bb, cache, style, out = built
    again = MicroASTBackbone(batch_size=2, cache_dir=cache)           # a fresh process state
    content = count_calls(monkeypatch, again.net, "content_features")
    styles = count_calls(monkeypatch, again.net, "style_code")
    hit = again.stylize(small, style)
    assert content == [] and styles == [] and torch.equal(hit.images, out.images)
    n_files = len(list(cache.glob("microast-*.safetensors")))
    other = again.stylize(small, load_image(paths.ASSETS / "styles" / "wave.jpg", 128))
    assert len(content) == 2 and len(styles) == 1                     # 3 frames in batches of 2
    assert len(list(cache.glob("microast-*.safetensors"))) == n_files + 1
    assert (other.images - out.images).abs().mean() > 0.02


def test_crop_then_render_matches_the_full_render_inside(built):
    """dec3 sees about 10 px around each pixel (up2, 3x3 at 1/2, up2, 3x3, 9x9), and a window's own
    reflect padding replaces the neighbours outside it: only pixels >= 12 px inside the window match."""
    bb, _, _, out = built
    box, m = (4, 6, 12, 16), 12
    win = out.crop(box, 4)
    assert win.images.shape[-2:] == (48, 64) and win.latents.shape[-2:] == (12, 16) and win.size == (48, 64)
    with torch.no_grad():
        r = bb.render(win.latents, win, torch.arange(3))
    assert r.shape == win.images.shape
    assert float((r - win.images)[..., m:-m, m:-m].abs().max()) < 1e-4
    assert out.crop((0, 0, 4, 4), 8).images.shape[-2:] == (32, 32)      # cells of 8 px: the TAEF2 latent's


def test_backbone_odd_sizes_and_edge_windows(built, small):
    bb, _, style, _ = built
    odd = MicroASTBackbone(batch_size=2).stylize(small[:2, :, :70, :101], style)
    assert odd.images.shape == (2, 3, 70, 101) and odd.latents.shape == (2, 64, 18, 26)
    edge = odd.crop((10, 20, 8, 6), 4)                                # reaches past row 70 / column 101
    assert edge.images.shape[-2:] == (30, 21) == edge.size
    with torch.no_grad():
        assert bb.render(edge.latents, edge, torch.arange(2)).shape == edge.images.shape


def test_select_style_accepts_names_and_any_image(tmp_path):
    cfg = get_config("cpu").backbone
    assert MicroASTBackbone.select_style(cfg, "starry_night")[1] == STARRY
    assert MicroASTBackbone.select_style(cfg, None)[1] == STARRY
    assert "van_gogh_wheat_field_with_cypresses" in vendored_styles()
    photo = _save(tmp_path / "photo.png")                              # any image: a frame of a clip
    assert MicroASTBackbone.select_style(cfg, str(photo)) == (cfg, photo)


def _save(path, arr=None):
    from PIL import Image

    arr = read_frames(CLIP, 2)[0] if arr is None else arr
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("kind", ["missing", "corrupt", "tiny", "flat"])
def test_bad_style_images_are_one_input_error(tmp_path, kind):
    p = tmp_path / f"{kind}.png"
    if kind == "corrupt":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif kind == "tiny":
        _save(p, np.random.default_rng(0).integers(0, 256, (8, 8, 3)))
    elif kind == "flat":
        _save(p, np.full((64, 64, 3), 128))
    for call in (lambda: check_style_image(p), lambda: MicroASTBackbone.select_style(get_config("cpu").backbone, str(p))):
        with pytest.raises(InputError) as err:
            call()
        msg = str(err.value)
        assert str(p) in msg and "Fix:" in msg and "\n" not in msg, msg
    if kind in ("tiny", "flat"):                                      # the same check on tensors
        with pytest.raises(InputError):
            MicroASTBackbone(cache_dir=None).stylize(torch.rand(2, 3, 32, 32), load_image(p))
