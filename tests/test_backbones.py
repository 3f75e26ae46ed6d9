"""The backbone protocol (vstlib/backbones/base.py), checked on every registered implementation."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from vstlib.backbones import BACKBONES, Backbone, BaselineOutput, make_backbone
from vstlib.config import get_config
from vstlib.errors import InputError

# Every registered backbone: a BackboneConfig that builds offline (random tiny weights), or the
# reason it cannot. A new backbone must add itself here (test_every_backbone_is_listed).
OFFLINE = {
    "diffusest": replace(get_config("smoke").backbone, name="diffusest", injection="z0"),
    # the real vendored networks (no random twin needed): short side 48 -> 32
    "faststyle": replace(get_config("smoke").backbone, name="faststyle", style_net="wave", resolution=32,
                         batch_size=2),
    "microast": replace(get_config("smoke").backbone, name="microast", resolution=32, batch_size=2),
}
T = 3


def smooth_images(n, seed, size):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=size, mode="bicubic",
                         align_corners=False).clamp(0, 1)


def offline_config(name):
    cfg = OFFLINE[name]
    if isinstance(cfg, str):
        pytest.skip(f"backbone {name!r} cannot be built offline: {cfg}")
    return cfg


@pytest.fixture(scope="module", autouse=True)
def quiet(one_thread):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSTLIB_PROGRESS", "0")
        yield


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def built(request, tmp_path_factory):
    """(name, config, backbone with a disk cache, frames (T,3,48,48), style (1,3,48,48), output)."""
    cfg = offline_config(request.param)
    cache = tmp_path_factory.mktemp(f"cache-{request.param}")
    bb = make_backbone(cfg, "cpu", cache)
    frames, style = smooth_images(T, 0, 48), smooth_images(1, 1, 48)     # resized to cfg.resolution
    return request.param, cfg, cache, bb, frames, style, bb.stylize(frames, style)


def test_every_backbone_is_listed():
    assert set(OFFLINE) == set(BACKBONES) and "diffusest" in BACKBONES


def test_stylize_shapes_and_ranges(built):
    name, cfg, _, bb, _, _, out = built
    r = cfg.resolution
    assert isinstance(bb, Backbone) and bb.name == name and BACKBONES[name] is type(bb)
    assert isinstance(out, BaselineOutput)
    assert out.images.shape == (T, 3, r, r) and out.images.dtype == torch.float32
    assert out.images.is_contiguous() and torch.isfinite(out.images).all()
    assert 0 <= out.images.min() and out.images.max() <= 1 and out.images.std() > 0
    if out.per_frame is not None:
        assert out.per_frame.shape == out.images.shape and 0 <= out.per_frame.min() <= out.per_frame.max() <= 1


def test_policy_latents_and_render_round_trip(built):
    _, cfg, _, bb, _, _, out = built
    L = bb.policy_latents(out)
    assert L.ndim == 4 and L.shape[:2] == (T, bb.latent_channels) and torch.isfinite(L).all()
    idx = torch.tensor([2, 0])
    with torch.no_grad():
        S = bb.render(L[idx], out, idx)                       # zero residual: the baseline frames
    assert S.shape == (2, 3, cfg.resolution, cfg.resolution) and 0 <= S.min() and S.max() <= 1
    assert torch.allclose(S, out.images[idx], atol=1e-5)
    with torch.no_grad():
        moved = bb.render(L[idx] + 0.5 * L[idx].std(), out, idx)
    assert (moved - S).abs().mean() > 1e-3                    # the latent does drive the frames


def test_render_is_differentiable(built):
    """Pathwise learners need d render / d latents: autograd agrees with central differences."""
    _, _, _, bb, _, _, out = built
    idx = torch.tensor([1])
    L = bb.policy_latents(out)[idx].detach()
    w = smooth_images(1, 5, out.images.shape[-1])              # a fixed scalar: <w, S>

    def f(lat):
        return (bb.render(lat, out, idx) * w).sum()

    lat = L.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(lat), lat)
    assert grad.shape == L.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    v = torch.randn(L.shape, generator=torch.Generator().manual_seed(0))
    h = 1e-2
    with torch.no_grad():
        fd = (f(L + h * v) - f(L - h * v)) / (2 * h)
    assert torch.isclose((grad * v).sum(), fd, rtol=0.05, atol=1e-3), ((grad * v).sum(), fd)


def test_stylize_is_disk_cached(built):
    name, cfg, cache, _, frames, style, out = built
    assert any(p.is_file() for p in cache.rglob("*"))
    again = make_backbone(cfg, "cpu", cache).stylize(frames, style)       # a fresh process state
    assert torch.equal(again.images, out.images)


def test_unknown_backbone_name():
    cfg = replace(get_config("smoke").backbone, name="nope")
    with pytest.raises(InputError, match=r"unknown backbone 'nope' \(set backbone.name\).*diffusest") as err:
        make_backbone(cfg, "cpu")
    assert "\n" not in str(err.value)
