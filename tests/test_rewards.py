"""Rewards and the frozen nets behind them: Grams, LPIPS, temporal/warping losses, CLIP, weights."""
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from vstlib.config import get_config
from vstlib.errors import InputError
from vstlib.evaluation.metrics import warping_error
from vstlib.nets import perceptual as models
from vstlib.paths import SINTEL
from vstlib.rl.rewards import (
    ContentLoss,
    RewardModel,
    StyleLoss,
    gram,
    temporal_loss,
    weighted_reward,
)

CFG = get_config("smoke")


def photo(name: str, size: int = 64) -> torch.Tensor:
    """(1,3,size,size) in [0,1] from a scikit-image sample photo."""
    a = torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(a, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)


@pytest.fixture(scope="module")
def style_img():
    return photo("coffee", 96)


@pytest.fixture(scope="module")
def style_loss(style_img):
    torch.manual_seed(0)
    return StyleLoss(CFG.reward, style_img)


@pytest.fixture(scope="module")
def content_loss():
    return ContentLoss(CFG.reward)


# --------------------------------------------------------------------------- Gram / style
def test_gram_by_hand():
    # 2 channels, 2x2: F = [[1,2,3,4],[0,1,0,-1]]; F F^T = [[30,-2],[-2,2]]; C H W = 8
    feat = torch.tensor([[[[1., 2.], [3., 4.]], [[0., 1.], [0., -1.]]]])
    expected = torch.tensor([[[30., -2.], [-2., 2.]]]) / 8
    assert torch.allclose(gram(feat), expected)
    two = torch.cat([feat, 2 * feat])                             # batch of 2, second scaled x2
    assert torch.allclose(gram(two)[1], 4 * expected[0])


def test_layer_style_loss_by_hand():
    """F = [[1,2],[3,4]] (C=2, HW=2) against a zero style Gram. F F^T = [[5,11],[11,25]].
    vgg5: Gram/(CHW=4) -> 1.25^2 + 2*2.75^2 + 6.25^2 = 55.75. relu1_1 (authors): MSE of Gram/(HW=2)
    = (2.5^2 + 2*5.5^2 + 12.5^2)/4 = 55.75 too (same number per layer, by the normalisations)."""
    from vstlib.rl.rewards import layer_style_loss

    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])                 # (1,2,1,2)
    zero = torch.zeros(1, 2, 2)
    assert float(layer_style_loss(f, zero, "vgg5")) == pytest.approx(55.75)
    assert float(layer_style_loss(f, zero, "relu1_1")) == pytest.approx(55.75)
    # against a non-zero target G_s/(HW) = [[1,0],[0,1]] (Gram/(CHW) = 0.5 I):
    # relu1_1 = (1.5^2 + 2*5.5^2 + 11.5^2)/4 = 195/4 = 48.75
    target = torch.eye(2)[None] * 0.5
    assert float(layer_style_loss(f, target, "relu1_1")) == pytest.approx(48.75)
    assert float(layer_style_loss(f, target, "vgg5")) == pytest.approx(48.75)


def layers_run(loss, x) -> int:
    """How many layers of the VGG stack one style-loss call runs (forward hooks)."""
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in loss.net.seq]
    loss(x)
    for h in hooks:
        h.remove()
    return len(calls)


def test_style_variant_relu1_1_uses_one_layer(style_img):
    """The authors' variant: relu1_1 alone, with torch's MSELoss on Gram / (HW)."""
    torch.manual_seed(0)
    authors = StyleLoss(replace(CFG.reward, style_variant="relu1_1"), style_img)
    x = photo("astronaut")
    assert authors.layers == ("relu1_1",) and layers_run(authors, x) == models.VGG19_LAYERS["relu1_1"] + 1
    f, fs = authors.features(x)[0], authors.features(style_img)[0]      # (1,64,H,W)
    hw = f.shape[2] * f.shape[3]
    g = (f.flatten(2) @ f.flatten(2).transpose(1, 2)) / hw
    gs = (fs.flatten(2) @ fs.flatten(2).transpose(1, 2)) / (fs.shape[2] * fs.shape[3])
    expect = torch.nn.functional.mse_loss(g, gs)
    assert float(authors(x)) == pytest.approx(float(expect), rel=1e-4)
    with pytest.raises(ValueError, match="style_variant"):
        StyleLoss(replace(CFG.reward, style_variant="vgg3"), style_img)


def test_vgg_layer_names_match_torchvision():
    import torchvision

    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    assert models.vgg19_layer_indices(feats) == models.VGG19_LAYERS
    assert [models.VGG19_LAYERS[f"relu{i}_1"] for i in range(1, 6)] == [1, 6, 11, 20, 29]


def test_style_loss(style_loss, style_img):
    assert style_loss.layers == CFG.reward.style_layers
    assert layers_run(style_loss, style_img) == models.VGG19_LAYERS["relu5_1"] + 1  # stops at the deepest layer
    # the style image has zero style loss; other photos have positive loss
    assert float(style_loss(style_img)) == pytest.approx(0.0, abs=1e-10)
    x = torch.cat([photo("astronaut"), photo("chelsea"), photo("rocket")])
    loss = style_loss(x)
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 1e-6).all()
    # = sum over layers of squared Frobenius distances of Grams F F^T/(CHW), written out here
    # without gram() (einsum over pixels); Grams stored once, as buffers
    def g_indep(f):
        n, c, h, w = f.shape
        return torch.einsum("nchw,ndhw->ncd", f, f) / (c * h * w)
    manual = sum((g_indep(f) - g_indep(g)).pow(2).sum((1, 2))
                 for f, g in zip(style_loss.features(x), style_loss.features(style_img)))
    assert torch.allclose(loss, manual, rtol=1e-4)
    assert sum(1 for n, _ in style_loss.named_buffers() if n.startswith("style_gram_")) == 5


def test_style_relu1_1_option_differs(style_loss, style_img):
    torch.manual_seed(0)                                          # same VGG weights as style_loss
    cfg1 = CFG.override(reward={"style_layers": ["relu1_1"]})
    one = StyleLoss(cfg1.reward, style_img)
    x = torch.cat([photo("astronaut"), photo("chelsea")])
    assert layers_run(one, x) == 2
    l1, l5 = one(x), style_loss(x)
    assert (l1 > 0).all() and (l5 > l1).all()                     # the 5-layer sum adds 4 terms
    with pytest.raises(ValueError, match="relu9_9"):
        StyleLoss(CFG.override(reward={"style_layers": ["relu9_9"]}).reward, style_img)


# --------------------------------------------------------------------------- LPIPS
def test_lpips_identity_range_and_noise(content_loss):
    x = torch.cat([photo("astronaut"), photo("chelsea")])
    assert torch.allclose(content_loss(x, x), torch.zeros(2), atol=1e-6)
    # equal frames skip the network (Table 1's input row); the network agrees that it is 0
    assert torch.equal(content_loss(x, x.clone()), torch.zeros(2))
    assert torch.allclose(content_loss(x.clone().requires_grad_(True), x).detach(), torch.zeros(2), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        content_loss(2 * x - 1, x)
    with pytest.raises(ValueError):
        content_loss(x, 2 * x - 1)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(x.shape, generator=g) * 2 - 1
    vals = [content_loss((x + a * noise).clamp(0, 1), x) for a in (0.02, 0.08, 0.3)]
    for lo, hi in zip(vals, vals[1:]):
        assert (hi > lo).all()
    assert (vals[0] > 0).all()


def test_lpips_uses_packaged_linear_layers_and_trunk_loading(monkeypatch):
    import lpips
    import torchvision

    m = models.lpips_alex(False)
    ref = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"),
                     map_location="cpu")
    assert torch.equal(m.lin0.model[1].weight, ref["lin0.model.1.weight"])
    assert not any(p.requires_grad for p in m.parameters()) and not m.training
    # pretrained trunk: the ImageNet state dict lands in lpips's slices (fake dict, no download)
    torch.manual_seed(3)
    fake = torchvision.models.alexnet().state_dict()
    monkeypatch.setattr(models, "load_torchvision_weights", lambda weights, what: fake)
    m = models.lpips_alex(True)
    assert torch.equal(m.net.slice1[0].weight, fake["features.0.weight"])
    assert torch.equal(getattr(m.net.slice3, "6").weight, fake["features.6.weight"])
    assert torch.equal(getattr(m.net.slice5, "10").bias, fake["features.10.bias"])


# --------------------------------------------------------------------------- temporal
def translated_clip(T=5, size=48, d=(2, 1)):
    """Frames of a photo translated by d=(dx,dy) px per frame, with exact flows and masks."""
    dx, dy = d
    big = photo("astronaut", 128)[0]                              # (3, 128, 128)
    o = 40
    frames = torch.stack([big[:, o - t * dy:o - t * dy + size, o - t * dx:o - t * dx + size]
                          for t in range(T)])                     # (T, 3, H, W)
    fw = torch.zeros(T - 1, 2, size, size)
    fw[:, 0], fw[:, 1] = dx, dy                                   # content moves by +d
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")

    def inside(u, v):
        ok = (xs + u >= 0) & (xs + u <= size - 1) & (ys + v >= 0) & (ys + v <= size - 1)
        return ok.float().expand(T - 1, 1, size, size).clone()

    return frames, dict(fw=fw, bw=-fw, mask_fw=inside(dx, dy), mask_bw=inside(-dx, -dy))


def _temporal(frames, f):
    return temporal_loss(frames[:-1], frames[1:], f["fw"], f["bw"], f["mask_fw"], f["mask_bw"])


def test_temporal_loss_consistent_clip_is_zero_and_flicker_grows():
    frames, f = translated_clip()
    stylized = 0.2 + 0.6 * frames ** 2                            # pointwise colour map, in [0.2,0.8]
    assert torch.allclose(_temporal(frames, f), torch.zeros(4), atol=1e-6)
    assert torch.allclose(_temporal(stylized, f), torch.zeros(4), atol=1e-6)
    assert torch.allclose(warping_error(stylized[:-1], stylized[1:], f["fw"], f["mask_fw"]),
                          torch.zeros(4), atol=1e-10)
    g = torch.Generator().manual_seed(0)
    b = torch.rand(5, 1, 1, 1, generator=g) * 2 - 1               # per-frame brightness offset
    losses = [_temporal(stylized + a * b, f).mean() for a in (0.0, 0.02, 0.05, 0.1, 0.2)]
    assert all(hi > lo for lo, hi in zip(losses, losses[1:])), losses
    # L1 of a constant offset: the mean over pairs equals a * mean|b_t - b_{t+1}|
    assert float(losses[-1]) == pytest.approx(0.2 * float((b[1:] - b[:-1]).abs().mean()), rel=1e-4)
    # without masks, pixels that leave the frame count as errors
    full = {**f, "mask_fw": torch.ones_like(f["mask_fw"]), "mask_bw": torch.ones_like(f["mask_bw"])}
    assert (_temporal(stylized, full) > 1e-3).all()


def test_temporal_loss_honours_masks():
    frames, f = translated_clip(T=2)
    dx, dy = 2, 1
    stylized = (0.1 + 0.8 * frames) + 0.03 * torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    # region R of prev and R + d of cur: masked out in both directions
    mf, mb = f["mask_fw"].clone(), f["mask_bw"].clone()
    mf[..., 10:20, 10:25] = 0
    mb[..., 10 + dy:20 + dy, 10 + dx:25 + dx] = 0
    f2 = {**f, "mask_fw": mf, "mask_bw": mb}
    garbage = stylized.clone()
    garbage[0, :, 10:20, 10:25] = 7.0
    garbage[1, :, 10 + dy:20 + dy, 10 + dx:25 + dx] = -3.0
    clean = _temporal(stylized, f2)
    assert float(clean) > 0
    assert torch.allclose(_temporal(garbage, f2), clean, atol=1e-6)
    assert float(_temporal(garbage, f)) > 10 * float(clean)       # the same garbage, unmasked
    # nothing visible: zero, not NaN
    zero = {**f, "mask_fw": torch.zeros_like(mf), "mask_bw": torch.zeros_like(mb)}
    assert torch.equal(_temporal(garbage, zero), torch.zeros(1))


@pytest.mark.skipif(not (SINTEL / "clean").exists(), reason="../shared Sintel sample absent")
def test_warping_error_on_sintel_ground_truth():
    import imageio.v3 as iio

    from vstlib.flow import read_flo

    d = SINTEL / "clean" / "easy"
    a, b = (torch.from_numpy(iio.imread(d / f"frame_000{i}.png")[..., :3]).permute(2, 0, 1)[None]
            .float() / 255 for i in (2, 3))
    fw = torch.from_numpy(read_flo(d / "gt" / "frame_0002.flo"))[None].float()  # (1,2,H,W)
    occ = torch.from_numpy(iio.imread(d / "gt" / "occlusions" / "frame_0002.png"))
    occ = occ[..., 0] if occ.ndim == 3 else occ
    mask = (occ < 128).float()[None, None]
    err = float(warping_error(a, b, fw, mask))
    no_warp = float(warping_error(a, b, torch.zeros_like(fw), mask))
    assert err < 0.003 and no_warp > 3 * err                      # Lai's (RGB summed): ~0.001 vs ~0.015


def test_warping_error_is_lais_definition():
    """Hand-computed: 2x2 frames, zero flow, one pixel occluded. prev - cur on the 3 visible pixels:
    (0.1,0.2,0.2), (0,0,0.3), (0.5,0,0): squared RGB distances 0.09, 0.09, 0.25 -> Lai = 0.43/3."""
    prev = torch.zeros(1, 3, 2, 2)
    cur = torch.zeros(1, 3, 2, 2)
    cur[0, :, 0, 0] = torch.tensor([0.1, 0.2, 0.2])
    cur[0, :, 0, 1] = torch.tensor([0.0, 0.0, 0.3])
    cur[0, :, 1, 0] = torch.tensor([0.5, 0.0, 0.0])
    cur[0, :, 1, 1] = torch.tensor([9.0, 9.0, 9.0])               # occluded: must not count
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])[None, None]
    fw = torch.zeros(1, 2, 2, 2)
    assert float(warping_error(prev, cur, fw, mask)) == pytest.approx(0.43 / 3, abs=1e-6)
    assert float(warping_error(prev, cur, fw, mask, "rgb_mean")) == pytest.approx(0.43 / 9, abs=1e-6)
    with pytest.raises(ValueError, match="eval.warp_error"):
        warping_error(prev, cur, fw, mask, "mse")


# --------------------------------------------------------------------------- RewardModel
def test_reward_model_terms(style_img):
    frames, f = translated_clip(T=4, size=32, d=(3, 0))
    stylized = (0.15 + 0.7 * frames.flip(1)).clamp(0, 1)          # channel swap: a crude "style"
    torch.manual_seed(0)
    rm = RewardModel.from_config(CFG.reward, style_img, "cpu")
    terms = rm.terms(stylized, frames, f)
    assert set(terms) == {"style", "content", "temporal", "reward"}
    for k, v in terms.items():
        assert v.shape == (3,) and torch.isfinite(v).all(), k
    for k in ("style", "content"):
        assert ((terms[k] > 1e-6) & (terms[k] < 1e2)).all(), (k, terms[k])
    r = CFG.reward
    expected = -(r.w_style * terms["style"] + r.w_content * terms["content"]
                 + r.w_temp * terms["temporal"])
    assert torch.allclose(terms["reward"], expected)
    assert torch.allclose(weighted_reward(terms, r), expected)
    # terms of frame t use frame t (and t-1 for temporal)
    assert torch.allclose(terms["style"], rm.style(stylized[1:]))
    assert torch.allclose(terms["content"], rm.content(stylized[1:], frames[1:]))
    # consistent stylization: temporal ~0; flicker raises it
    assert torch.allclose(terms["temporal"], torch.zeros(3), atol=1e-6)
    flick = (stylized + 0.05 * torch.tensor([0., 1., -1., 1.]).view(4, 1, 1, 1)).clamp(0, 1)
    t2 = rm.terms(flick, frames, f)
    assert (t2["temporal"] > 1e-3).all() and (t2["reward"] < terms["reward"]).all()
    # chunking does not change the result
    rm.chunk = 2
    t3 = rm.terms(flick, frames, f)
    for k in terms:
        assert torch.allclose(t3[k], t2[k], atol=1e-6), k
    with pytest.raises(InputError, match="2 frames"):
        rm.terms(stylized[:1], frames[:1], {k: v[:0] for k, v in f.items()})
    bad = stylized.clone()
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        rm.terms(bad, frames, f)


# --------------------------------------------------------------------------- CLIP
def test_clip_tiny_features():
    model, pre = models.clip_model("tiny", None, "cpu")
    x = torch.cat([photo("astronaut", 80), photo("chelsea", 80)])
    assert pre(x).shape == (2, 3, 64, 64)
    feats = models.clip_image_features(model, pre, torch.cat([x, x[:1]]), batch_size=2)
    assert feats.shape == (3, 32)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(feats[0] @ feats[2]) == pytest.approx(1.0, abs=1e-5)
    assert float(feats[0] @ feats[1]) < 0.9999
    # the tiny model is the same on every call (comparable smoke scores), whatever the RNG state
    torch.manual_seed(123)
    model2, _ = models.clip_model("tiny", None, "cpu")
    assert torch.allclose(models.clip_image_features(model2, pre, x), feats[:2], atol=1e-6)
    assert model2 is model                                     # built once per process 


# --------------------------------------------------------------------------- paper profile, offline
def test_paper_weights_offline_raise_one_clear_error(tmp_path):
    code = textwrap.dedent("""
        import time
        from vstlib.nets import perceptual as models
        from vstlib.errors import MissingWeightsError
        for call in (lambda: models.vgg19_features("IMAGENET1K_V1", "cpu"),
                     lambda: models.lpips_alex(True, "cpu"),
                     lambda: models.clip_model("ViT-B-32", "openai", "cpu")):
            t = time.time()
            try:
                call()
            except MissingWeightsError as err:
                print("MISSING", round(time.time() - t, 1), err)
            else:
                print("LOADED")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"),
           "HF_HOME": str(tmp_path / "hf"), "VSTLIB_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("MISSING", "LOADED"))]
    assert len(lines) == 3 and all(ln.startswith("MISSING") for ln in lines), out.stdout + out.stderr
    vgg, alex, clip = lines
    assert "vgg19" in vgg and str(tmp_path / "torch") in vgg and "download" in vgg
    assert "alexnet" in alex and str(tmp_path / "torch") in alex
    assert "ViT-B-32" in clip and "timm/vit_base_patch32_clip_224.openai" in clip
    assert "HF_HOME" in clip
    assert all(float(ln.split()[1]) < 30 for ln in lines)          # no long retries


# --------------------------------------------------------------------------- registry
def test_weighted_reward_by_name_hand_computed():
    from vstlib.rl.rewards import weight

    r = CFG.reward                                                # 10 / 1 / 10
    terms = {"style": torch.tensor([1.0, 0.5]), "content": torch.tensor([2.0, 0.0]),
             "temporal": torch.tensor([0.25, 1.0])}
    assert torch.equal(weighted_reward(terms, r), torch.tensor([-(10 + 2 + 2.5), -(5 + 0 + 10)]))
    assert weight(r, "temporal") == 10.0                          # w_temp, the paper's name
    # a weights mapping overrides w_<name> and weighs new terms; terms pick and order the sum
    r2 = CFG.override(reward={"terms": ["content", "toy"], "weights": {"content": 3.0, "toy": -2.0}}).reward
    assert weighted_reward({"content": 1.0, "toy": 4.0, "style": 99.0}, r2) == -(3.0 - 8.0)
    with pytest.raises(ValueError, match="reward.weights.nope"):
        weighted_reward({"nope": 1.0}, CFG.override(reward={"terms": ["nope"]}).reward)


def test_normalised_and_hinged_reward_by_hand():
    import pandas as pd

    base = {"style": torch.tensor([2.0, 2.0]), "content": torch.tensor([4.0, 4.0]),
            "temporal": torch.tensor([0.5, 0.5])}
    terms = {"style": torch.tensor([1.0, 3.0]), "content": torch.tensor([4.0, 2.0]),
             "temporal": torch.tensor([0.25, 0.5])}
    r = CFG.override(reward={"normalize": "baseline"}).reward                     # 10 / 1 / 10 of ratios
    assert torch.allclose(weighted_reward(terms, r, base), torch.tensor([-(5 + 1 + 5.0), -(15 + 0.5 + 10.0)]))
    # hinge: style and content floored at the baseline's (ratio 1): no credit below it, full penalty above
    h = CFG.override(reward={"normalize": "baseline", "hinge": ["style", "content"]}).reward
    assert torch.allclose(weighted_reward(terms, h, base), torch.tensor([-(10 + 1 + 5.0), -(15 + 1 + 10.0)]))
    row, brow = pd.Series({k: float(v[0]) for k, v in terms.items()}), pd.Series({k: float(v[0]) for k, v in base.items()})
    assert weighted_reward(row, h, brow) == pytest.approx(-16.0)                  # table rows score alike
    s = terms["style"].clone().requires_grad_()
    weighted_reward({**terms, "style": s}, h, base).sum().backward()
    assert s.grad.tolist() == [0.0, -5.0]                                         # below the floor: no gradient
    with pytest.raises(ValueError, match="hinge needs reward.normalize"):
        weighted_reward(terms, CFG.override(reward={"hinge": ["style"]}).reward, base)


def test_reward_terms_and_networks_are_picked_by_name(style_img, monkeypatch):
    from vstlib.rl import rewards

    class Ones(torch.nn.Module):
        def score(self, cur, prev, originals, flows, reference=None):
            return torch.ones(cur.shape[0])

    monkeypatch.setitem(rewards.REWARDS, "ones", lambda cfg_reward, style, device: Ones())
    frames, f = translated_clip(T=3, size=32, d=(1, 0))
    cfg_r = CFG.override(reward={"terms": ["ones", "temporal"], "weights": {"ones": 0.5}}).reward
    rm = RewardModel(cfg_r, style_img)
    t = rm.terms(frames, frames, f)
    assert set(t) == {"ones", "temporal", "reward"}
    assert torch.allclose(t["reward"], -(0.5 + 10.0 * t["temporal"]))
    with pytest.raises(ValueError, match="unknown reward term 'nope'"):
        RewardModel(CFG.override(reward={"terms": ["nope"]}).reward, style_img)
    with pytest.raises(ValueError, match="unknown style network .nope."):
        StyleLoss(CFG.override(reward={"style_net": "nope"}).reward, style_img)


# --------------------------------------------------------------------------- losses at reward.loss_size (issue 12 item 4)
def translated_wide_clip(T=3, h=64, w=96, d=(4, 2)):
    """Non-square frames (T,3,h,w) of a photo translated by d=(dx,dy) px per frame, exact flows, masks."""
    dx, dy = d
    big = photo("astronaut", 256)[0]                              # (3, 256, 256)
    o = 60
    frames = torch.stack([big[:, o - t * dy:o - t * dy + h, o - t * dx:o - t * dx + w] for t in range(T)])
    fw = torch.zeros(T - 1, 2, h, w)
    fw[:, 0], fw[:, 1] = dx, dy
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

    def inside(u, v):
        ok = (xs + u >= 0) & (xs + u <= w - 1) & (ys + v >= 0) & (ys + v <= h - 1)
        return ok.float().expand(T - 1, 1, h, w).clone()

    return frames, dict(fw=fw, bw=-fw, mask_fw=inside(dx, dy), mask_bw=inside(-dx, -dy))


def _by_hand(frames, f, hw, scale_flow=True):
    """Frames and flows resized to hw by hand: antialiased bilinear, flow vectors x (w'/W, h'/H)."""
    r = lambda x: F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)  # noqa: E731
    H, W = frames.shape[-2:]
    k = torch.tensor([hw[1] / W, hw[0] / H]).view(1, 2, 1, 1) if scale_flow else 1.0
    return r(frames), {"fw": r(f["fw"]) * k, "bw": r(f["bw"]) * k, "mask_fw": r(f["mask_fw"]), "mask_bw": r(f["mask_bw"])}


def test_loss_size_terms_equal_terms_on_frames_resized_by_hand():
    """RewardModel and Table 1 (evaluate.clip_losses) with reward.loss_size=32 on 64x96 frames equal
    the terms at loss_size 0 on frames, flows and masks resized by hand to 32x48, with the Gram
    target the whole (non-square) style image squashed to 32x32 (B4)."""
    from vstlib.evaluation.evaluate import clip_losses
    from vstlib.rl.rewards import loss_hw, style_target

    frames, f = translated_wide_clip()
    stylized = (0.1 + 0.8 * frames.flip(1)).clamp(0, 1)
    stylized = (stylized + 0.04 * torch.tensor([0.0, 1.0, -1.0]).view(3, 1, 1, 1)).clamp(0, 1)  # some flicker
    style = F.interpolate(photo("coffee", 96), size=(96, 160), mode="bilinear", align_corners=False)
    assert loss_hw(64, 96, 32) == (32, 48) and loss_hw(96, 64, 32) == (48, 32) and loss_hw(64, 96, 0) == (64, 96)
    at32 = replace(CFG.reward, loss_size=32)
    torch.manual_seed(0)
    rm = RewardModel.from_config(at32, style, "cpu")
    torch.manual_seed(0)
    small_style = F.interpolate(style, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(style_target(style, 32), small_style)
    ref = RewardModel.from_config(CFG.reward, small_style, "cpu")
    S_s, f_s = _by_hand(stylized, f, (32, 48))
    I_s, _ = _by_hand(frames, f, (32, 48))
    got, want = rm.terms(stylized, frames, f), ref.terms(S_s, I_s, f_s)
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-6), (k, got[k], want[k])
    assert (got["temporal"] > 1e-3).all()                         # the flicker is measured at 32x48
    a, b = clip_losses(stylized, frames, f, rm), clip_losses(S_s, I_s, f_s, ref)
    assert a == pytest.approx(b, rel=1e-5, abs=1e-7)
    # gradients reach the full-size frames through the resize (pathwise learners)
    x = stylized.clone().requires_grad_(True)
    rm.differentiable_terms(x, frames, f)["reward"].sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.abs().sum() > 0


def test_loss_size_rescales_the_flow_magnitude():
    """An exactly translated clip (8 px per frame at 128 px high) stylized by a pointwise colour map has
    temporal loss ~0; at loss_size 64 its flow becomes 4 px and the loss stays ~0. A flow resized
    without rescaling its vectors (still 8 px) makes it large."""
    from vstlib.rl.rewards import loss_inputs

    frames, f = translated_wide_clip(T=3, h=128, w=192, d=(8, 4))
    stylized = 0.2 + 0.6 * frames ** 2
    full = _temporal(stylized, f)
    assert torch.allclose(full, torch.zeros(2), atol=1e-6)
    S, _, g = loss_inputs(64, stylized, frames, f)
    assert S.shape[-2:] == (64, 96) and g["fw"].shape == (2, 2, 64, 96)
    assert torch.allclose(g["fw"][:, 0], torch.full((2, 64, 96), 4.0)) and torch.allclose(g["bw"][:, 1], torch.full((2, 64, 96), -2.0))
    small = _temporal(S, g)
    _, unscaled = _by_hand(stylized, f, (64, 96), scale_flow=False)
    wrong = _temporal(S, unscaled)
    assert (small < 2e-3).all() and (wrong > 20 * small).all(), (small, wrong)
    assert 0 <= float(g["mask_fw"].min()) and float(g["mask_fw"].max()) <= 1
