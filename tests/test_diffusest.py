"""DiffuseST backbone on the tiny offline twin (diffusers-style fast tests)."""
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import isolated_home

from vstlib.backbones import BaselineOutput
from vstlib.backbones.diffusest import DiffuseST, DiffuseSTOutput
from vstlib.backbones.diffusest.injection import InjectionAttnProcessor, InjectionState
from vstlib.backbones.diffusest.sampler import ddim_move
from vstlib.config import get_config
from vstlib.errors import InputError, MissingWeightsError

T = 4  # frames per test clip


def smooth_images(n, seed, size=64):
    """Random smooth RGB images in [0,1] (upsampled noise), deterministic."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=size, mode="bicubic",
                         align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny modules gain nothing from 2 threads, and OpenMP threads stall badly when other
    # processes share this 2-core machine (40 s instead of 0.4 s for a clip)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def frames():
    return smooth_images(T, 0)


@pytest.fixture(scope="module")
def style():
    return smooth_images(1, 1)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from isolated_home(tmp_path_factory.mktemp("vsthome"))


SMOKE = get_config("smoke").backbone


def build(cfg=SMOKE, cache_dir=None, **changes):
    """The tiny twin on the CPU; ``changes`` replace BackboneConfig fields; no cache by default."""
    return DiffuseST.from_config(replace(cfg, **changes), device="cpu", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def sty(home):
    return build()


@pytest.fixture(scope="module")
def out(sty, frames, style):
    return sty(frames, style)


def test_shapes_and_range(sty, out):
    assert isinstance(out, DiffuseSTOutput) and isinstance(out, BaselineOutput) and out.per_frame is None
    assert sty.name == "diffusest" and sty.latent_channels == 4
    assert out.images.shape == (T, 3, 64, 64)
    assert out.xT.shape == out.z0.shape == out.inversion.z.shape == (T, 4, 8, 8)
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert sorted(out.inversion.trajectory) == sorted(sty.timesteps) and len(sty.timesteps) == 10
    assert torch.equal(out.xT, out.inversion.trajectory[max(sty.timesteps)])
    assert out.style_ctx.cond.shape == out.style_ctx.uncond.shape == (1, 77, 32)
    assert not torch.allclose(out.style_ctx.cond, out.style_ctx.uncond)   # style queries spliced in
    assert torch.isfinite(out.images).all()


def test_frames_resized_and_bad_input(sty, frames):
    big = F.interpolate(frames[:1], size=80, mode="bilinear", align_corners=False)
    assert sty.prepare(big).shape == (1, 3, 64, 64)
    with pytest.raises(InputError, match="shape"):
        sty.prepare(torch.rand(2, 4, 64, 64))                               # RGBA
    with pytest.raises(InputError, match="NaN"):
        sty.prepare(torch.full((2, 3, 64, 64), float("nan")))
    with pytest.raises(InputError, match=r"\[0,1\]"):
        sty.prepare(torch.rand(2, 3, 64, 64) * 255)


def test_determinism_under_seed(home, frames, style, out):
    a = build()(frames[:2], style)
    b = build()(frames[:2], style)
    assert torch.equal(a.images, b.images) and torch.equal(a.z0, b.z0)
    # same as in the 4-frame batch, up to float reordering (amplified by guidance 7.5 and the decoder)
    assert torch.allclose(a.z0, out.z0[:2], atol=2e-4) and torch.allclose(a.images, out.images[:2], atol=2e-3)
    c = build(seed=1)(frames[:2], style)
    assert not torch.allclose(a.images, c.images, atol=1e-3)


def test_batched_equals_one_at_a_time(sty, frames, style, out):
    calls = sty.unet_calls
    single = [sty(frames[i:i + 1], style) for i in range(T)]
    assert torch.allclose(torch.cat([o.z0 for o in single]), out.z0, atol=2e-4)
    assert torch.allclose(torch.cat([o.images for o in single]), out.images, atol=2e-3)
    # one frame at a time: 10 inversion + 10 style inversion + 10 denoising passes per frame (no cache)
    assert sty.unet_calls - calls == T * 30


def test_disk_and_memory_cache(home, frames, style):
    folder = home / ".cache" / "smoke" / "backbone"
    a = build(cache_dir=folder)
    first = a(frames, style)
    # frames: 10 inversion passes, style image: 10, denoising: 10 (one batch of 4 frames)
    assert a.unet_calls == 30
    again = a(frames, style)
    assert a.unet_calls == 30                                              # memory hit
    assert torch.equal(again.images, first.images)
    b = build(cache_dir=folder)                                            # fresh process state
    from_disk = b(frames, style)
    assert b.unet_calls == 0                                               # disk hit
    assert torch.equal(from_disk.images, first.images)
    assert torch.equal(from_disk.inversion.trajectory[1], first.inversion.trajectory[1])
    assert list(folder.glob("*.safetensors"))
    b(frames, smooth_images(1, 7))                                         # new style, same frames
    assert b.unet_calls == 20                                              # inversion reused
    # the policy-injection point does not change the baseline: xT and z0 runs share the cache
    c = build(cache_dir=folder, injection="xT")
    c(frames, style)
    assert c.unet_calls == 0


def _count_steps(sty, out):
    sty.state.fired = {"content": 0, "style": 0}
    sty.denoise(out.xT[:1], out.inversion.select([0]), out.style_ctx)
    modes = [m for _, m in sty.step_log]
    return modes.count("content"), modes.count("style"), dict(sty.state.fired)


def test_injection_schedule(sty, out, home):
    n_attn1 = sum(isinstance(p, InjectionAttnProcessor) for p in sty.unet.attn_processors.values())
    n_res = len(sty.unet.up_blocks[1].resnets) + len(sty.unet.up_blocks[2].resnets)
    # the tiny twin has 2 attentions per up block; DiffuseST's set drops up_blocks[1].attentions[0]
    assert n_attn1 == sum(len(sty.unet.up_blocks[b].attentions) for b in (1, 2, 3)) - 1 == 5
    # default: content on t >= 1000*alpha = 100 (901..101: 9 steps), style on t < 100 (t=1)
    n_c, n_s, fired = _count_steps(sty, out)
    assert (n_c, n_s) == (9, 1)
    assert fired == {"content": 9 * (n_attn1 + n_res), "style": 1 * n_attn1}
    # the authors' schedule: every step a content step, the style branch never runs
    orig = build(original_schedule=True)
    n_c, n_s, fired = _count_steps(orig, out)
    assert (n_c, n_s) == (10, 0) and fired["style"] == 0
    # alpha = 0.5: t in {401,...,1} are style steps
    half = build(alpha=0.5)
    assert _count_steps(half, out)[:2] == (5, 5)
    # injection changes the result; without it no hook fires
    sty.state.fired = {"content": 0, "style": 0}
    plain = sty.denoise(out.xT[:1], out.inversion.select([0]), out.style_ctx, inject=False)
    assert sty.state.fired == {"content": 0, "style": 0}
    assert not torch.allclose(plain, out.z0[:1], atol=1e-4)


def test_injection_layers_on_sd15_block_layout():
    """SD-1.5's UNet block layout (layers_per_block 2, 3 attentions per up block), small widths, no
    weights: the hooked attn1 set is exactly DiffuseST's 8 layers, and "all_up" (the old set) is not."""
    from diffusers import UNet2DConditionModel

    from vstlib.backbones.diffusest.injection import install_injection
    from vstlib.backbones.diffusest.tiny import SD15_UNET

    layout = {**SD15_UNET, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4,
              "cross_attention_dim": 8, "attention_head_dim": 2, "sample_size": 8}
    diffusest = {f"up_blocks.{b}.attentions.{i}.transformer_blocks.0.attn1.processor"
                 for b, i in [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]}

    def hooked(layers):
        unet = UNet2DConditionModel(**layout)
        assert [len(unet.up_blocks[b].attentions) for b in (1, 2, 3)] == [3, 3, 3]
        hooks = install_injection(unet, InjectionState(), layers)
        assert len(hooks) == 6                                   # conv2 of up_blocks[1,2].resnets[0,1,2]
        return {n for n, p in unet.attn_processors.items() if isinstance(p, InjectionAttnProcessor)}

    assert hooked("diffusest") == diffusest
    old = hooked("all_up")
    assert len(old) == 9 and old != diffusest and "up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor" in old


def test_attention_processor_semantics():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    st = InjectionState()
    attn.set_processor(InjectionAttnProcessor(st))
    x = torch.randn(3, 5, 8)                                   # [ref, target, target] tokens

    def manual(q_src, k_src, v_src):
        q, k, v = attn.to_q(q_src), attn.to_k(k_src), attn.to_v(v_src)
        q, k, v = (t.view(-1, 5, 2, 4).transpose(1, 2) for t in (q, k, v))
        o = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
        return attn.to_out[0](o.transpose(1, 2).reshape(-1, 5, 8))

    with torch.no_grad():
        st.mode, st.n_ref, st.groups = None, 0, 1
        assert torch.allclose(attn(x), manual(x, x, x), atol=1e-5)
        st.mode, st.n_ref, st.groups = "content", 1, 2        # targets: ref's q, k; own v
        y = attn(x)
        assert torch.allclose(y[1:], manual(x[:1].expand(2, -1, -1), x[:1].expand(2, -1, -1), x[1:]), atol=1e-5)
        st.mode = "style"                                      # targets: own q; ref's k, v
        y = attn(x)
        assert torch.allclose(y[1:], manual(x[1:], x[:1].expand(2, -1, -1), x[:1].expand(2, -1, -1)), atol=1e-5)
        assert torch.allclose(y[:1], manual(x[:1], x[:1], x[:1]), atol=1e-5)


def test_ddim_move_matches_scheduler(sty):
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in (901, 1):
        ref = sty.scheduler.step(eps, t, x).prev_sample
        assert torch.allclose(ddim_move(x, eps, sty.sampler.alpha(t), sty.sampler.alpha(sty.sampler.prev(t))), ref, atol=1e-5)


def test_xT_round_trip(home, frames):
    s = build(num_inference_steps=50, num_inversion_steps=50)
    inv = s.invert(frames[:1])
    z = s.denoise(inv.xT, inv, None, inject=False, guidance_scale=1.0)
    noise = torch.randn(inv.xT.shape, generator=torch.Generator().manual_seed(0))
    z_rand = s.denoise(noise, inv, None, inject=False, guidance_scale=1.0)
    rel = lambda a: ((a - inv.z).norm() / inv.z.norm()).item()  # noqa: E731
    assert rel(z) < 0.05
    assert rel(z) < 0.01 * rel(z_rand)
    assert s.unet_calls == 150


def test_render_zero_delta_equals_baseline(sty, out, frames, style):
    idx = torch.tensor([2, 0])
    assert torch.equal(sty.policy_latents(out), out.z0)
    img = sty.render(out.z0[idx], out, idx)
    assert torch.allclose(img, out.images[idx], atol=1e-5)
    # same seed -> same weights: the xT variant can render the baseline computed by ``sty``
    xt = build(sty.cfg, injection="xT")
    assert torch.equal(xt.policy_latents(out), out.xT)
    calls = xt.unet_calls
    img = xt.render(out.xT[idx], out, idx)                      # full denoise of those 2 frames
    assert torch.allclose(img, out.images[idx], atol=1e-4)
    assert xt.unet_calls - calls == 10
    moved = xt.render(out.xT[idx] + 0.5, out, idx)
    assert not torch.allclose(moved, img, atol=1e-3)


def test_paper_profile_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("VSTLIB_HOME", str(tmp_path))
    t0 = time.time()
    with pytest.raises(MissingWeightsError, match="Salesforce/blipdiffusion") as err:
        DiffuseST.from_config(get_config("paper").backbone, device="cpu", cache_dir=tmp_path / "bb")
    assert "hf download Salesforce/blipdiffusion" in str(err.value)
    # the command we tell people to run ships with the installed huggingface_hub (its old
    # `huggingface-cli` no longer ships with recent huggingface_hub releases)
    assert (Path(sys.executable).parent / "hf").exists()
    assert time.time() - t0 < 10


def test_ddim_inversion_takes_eps_at_the_target_timestep():
    """Analytic linear eps-model eps(x, t) = (t/1000) x: every DDIM move multiplies x by a scalar, so
    the exact inversion is z times a product of known factors. Inverting from alpha_bar a to a' with
    eps evaluated at the TARGET timestep t' (DDIM inversion: x_t' from x_t with eps(x_t, t')):
        r = sqrt(a'/a) (1 - sqrt(1-a) g) + sqrt(1-a') g,   g = t'/1000.
    Evaluating eps one step behind (g = t/1000) gives a different product; the test tells them apart."""
    from diffusers import DDIMScheduler

    from vstlib.backbones.diffusest.components import SD_SCHEDULER
    from vstlib.backbones.diffusest.sampler import DDIMSampler

    sampler = DDIMSampler(DDIMScheduler(**SD_SCHEDULER), 4, 4)
    assert sampler.timesteps == [751, 501, 251, 1]
    ac = DDIMScheduler(**SD_SCHEDULER).alphas_cumprod.double()
    a_final = float(ac[0])                                     # set_alpha_to_one=False: alpha_bar_0
    z = torch.full((1, 4, 2, 2), 0.7, dtype=torch.float64)
    traj = sampler.invert(z, lambda x, t: (t / 1000) * x)

    def expected(lag: bool) -> dict:
        out, x, a, t_prev = {}, 0.7, a_final, 0
        for t in (1, 251, 501, 751):
            a2 = float(ac[t])
            g = (t_prev if lag else t) / 1000
            x = x * ((a2 / a) ** 0.5 * (1 - (1 - a) ** 0.5 * g) + (1 - a2) ** 0.5 * g)
            out[t], a, t_prev = x, a2, t
        return out

    right, behind = expected(False), expected(True)
    for t in (1, 251, 501, 751):
        assert float(traj[t].mean()) == pytest.approx(right[t], rel=1e-9)
    assert abs(right[751] - behind[751]) > 0.05               # the two conventions are far apart


def test_pndm_sampler_visits_a_timestep_twice_and_keeps_no_state(frames, style):
    """backbone.sampler="pndm" (DiffuseST): PLMS visits 500 twice for 4 steps; the trajectory and the
    injection schedule are keyed by distinct timesteps; the multistep state does not leak between
    calls (denoising the same x_T twice gives the same z0)."""
    pndm = build(sampler="pndm", num_inference_steps=4, num_inversion_steps=4)
    assert pndm.sampler.plms_timesteps == [750, 500, 500, 250, 0]
    assert pndm.timesteps == [750, 500, 250, 0]
    out = pndm(frames[:2], style)
    assert sorted(out.inversion.trajectory) == [0, 250, 500, 750]
    assert [t for t, _ in pndm.step_log] == [750, 500, 500, 250, 0]
    assert torch.isfinite(out.images).all()
    again = pndm.denoise(out.xT, out.inversion, out.style_ctx)
    assert torch.equal(again, out.z0)
    ddim = build(num_inference_steps=4, num_inversion_steps=4)
    assert not torch.allclose(ddim(frames[:2], style).z0, out.z0, atol=1e-3)


# --------------------------------------------------------------------------- any aspect ratio
def test_non_square_clip_stylizes_and_the_policy_renders_it(home):
    """A 64x96 clip (latents 8x12) and a 80x48 style image: DiffuseST keeps the frames' size, the
    style reference is inverted at the frames' size, and the policy's act -> render round trip works
    for z0 and xT (zero action = the baseline)."""
    from vstlib.flow import latent_flow
    from vstlib.rl.policy import LatentPolicy
    from vstlib.rl.step import LatentClip, render, unroll

    frames = F.interpolate(smooth_images(3, 0), size=(64, 96), mode="bilinear", align_corners=False)
    style = F.interpolate(smooth_images(1, 1), size=(80, 48), mode="bilinear", align_corners=False)
    for inj in ("z0", "xT"):
        s = build(injection=inj, num_inference_steps=3, num_inversion_steps=3)
        out = s(frames, style)
        assert out.images.shape == (3, 3, 64, 96) and torch.isfinite(out.images).all()
        assert out.xT.shape == out.z0.shape == (3, 4, 8, 12)
        assert out.style_ctx.inversion.xT.shape == (1, 4, 8, 12)             # shares the UNet batch
        L = s.policy_latents(out)
        assert L.shape == (3, 4, 8, 12)
        idx = torch.tensor([1, 2])
        assert torch.allclose(s.render(L[idx], out, idx), out.images[idx], atol=1e-4)
        for obs in ("pair", "flow"):
            pol = LatentPolicy(latent_channels=4, hidden=8, gate_init=0.0, observation=obs)
            flows = {"bw": torch.ones(2, 2, 64, 96), "mask_bw": torch.ones(2, 1, 64, 96)}
            lat_bw, lat_mask = latent_flow(flows, *L.shape[-2:])
            assert lat_bw.shape == (2, 2, 8, 12) and torch.allclose(lat_bw[:, 0], torch.full((2, 8, 12), 12 / 96))
            u = unroll(pol, LatentClip(L, lat_bw, lat_mask), "sample")
            assert u.actions.shape == (1, 2, 4, 8, 12) and torch.isfinite(u.logp).all()
            S = torch.cat([out.images[:1], render(s, out, u.out[0])])
            assert S.shape == (3, 3, 64, 96) and torch.isfinite(S).all()
            assert not torch.allclose(S[1:], out.images[1:], atol=1e-4)       # the action moved the frames


def test_qformer_sees_the_whole_style_image(sty):
    """A9: the Q-Former input is the WHOLE style image squashed to its square size (antialiased
    bicubic, normalised), not a centre crop: a 64x192 style reaches it square with all three thirds."""
    style = torch.zeros(1, 3, 64, 192)
    style[..., :, :64] = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)
    style[..., :, 64:128] = torch.tensor([0, 1.0, 0]).view(1, 3, 1, 1)
    style[..., :, 128:] = torch.tensor([0, 0, 1.0]).view(1, 3, 1, 1)
    seen = []
    hook = sty.qformer.visual_encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        sty.style_embedding(sty.prepare(style, "style image"))
    finally:
        hook.remove()
    vis = sty.qformer.config.vision_config.image_size
    mean = torch.tensor(sty.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(sty.image_std).view(1, 3, 1, 1)
    px = seen[0] * std + mean                                                 # back to [0,1]
    assert px.shape == (1, 3, vis, vis)
    third = vis // 3
    assert px[0, 0, :, :third - 2].mean() > 0.95 and px[0, 2, :, -third + 2:].mean() > 0.95   # red left, blue right
    want = F.interpolate(sty.prepare(style, "style image"), size=(vis, vis), mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)
    assert torch.allclose(px, want, atol=1e-5)
