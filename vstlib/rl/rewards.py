"""The reward: style (Gram/VGG19), content (LPIPS) and bidirectional temporal losses (the paper), and
beyond it fidelity to the per-frame stylization N(I_t).

    reward = -(w_style * style + w_content * content + w_temp * temporal [+ w_fidelity * fidelity])

Terms are registered by name, DDPO-style (``REWARDS``); ``cfg.reward.terms`` picks them and
``weighted_reward`` is the ONE weighted sum (rollouts, evaluation, notebooks, tests). A term is
built as ``REWARDS[name](cfg_reward, style, device)`` and scored as
``term.score(cur, prev, originals, flows, reference) -> (N,)`` on frames 1..T-1 of a clip
(``reference``: N(I_t) of the same frames, for the terms that measure fidelity to it).

All losses take frames (N,3,H,W) in [0,1] and return one value per frame (N,).
Flows are those of the ORIGINAL frames (see the guide's conventions): stylized frames are
judged by how well they follow the motion of the video they came from.

``cfg_reward.loss_size`` (0 = as rendered) is the size the losses are computed at: the
``RewardModel`` (training and Table 1, ``evaluate.clip_losses``) resizes frames, flows and masks so
the short side is ``loss_size`` (``loss_inputs``: antialiased bilinear, flow vectors rescaled,
differentiable), and the Gram target R is the whole style image squashed to ``loss_size`` squared
(the authors compute every loss at 256 with ``Resize((256, 256))``; DiffuseST renders at 512).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn

from vstlib.errors import InputError
from vstlib.flow import masked_mean, resize_flow, warp
from vstlib.nets.memo import RecentInputs
from vstlib.nets.perceptual import CONTENT_NETS, STYLE_NETS
from vstlib.registry import Registry
from vstlib.video.resize import resize, short_side_size

Device = Union[str, torch.device]


# --------------------------------------------------------------------------- loss size
def loss_hw(h: int, w: int, short: int) -> tuple[int, int]:
    """(h', w') with the short side ``short``, aspect ratio kept (whole pixels); ``short <= 0``: (h, w)."""
    return (h, w) if short <= 0 else short_side_size(h, w, short, multiple=1)


def loss_inputs(short: int, stylized: torch.Tensor, originals: torch.Tensor, flows: dict):
    """(stylized, originals, flows) at the loss size: frames (T,3,H,W) to short side ``short``
    (0 = unchanged), flows resized with their vectors rescaled (``flow.resize_flow``), visibility
    masks resized (soft weights in [0,1] at occlusion edges)."""
    hw = loss_hw(stylized.shape[-2], stylized.shape[-1], short)
    return resize(stylized, hw), resize(originals, hw), resize_flows(flows, hw)


def resize_flows(flows: dict, hw: tuple) -> dict:
    if tuple(flows["fw"].shape[-2:]) == tuple(hw):
        return flows
    f = dict(flows)
    for k in ("fw", "bw"):
        f[k] = resize_flow(flows[k].float(), hw)
    for k in ("mask_fw", "mask_bw"):
        f[k] = resize(flows[k].float(), hw)
    return f


def style_target(style: torch.Tensor, short: int) -> torch.Tensor:
    """The Gram target R: the WHOLE style image (1,3,H,W), squashed to ``short`` x ``short``
    (the authors' ``Resize((256, 256))``; never cropped); ``short <= 0``: as given."""
    return style if short <= 0 else resize(style, (short, short))


# --------------------------------------------------------------------------- style
def gram(feat: torch.Tensor) -> torch.Tensor:
    """Gram matrix F F^T / (C H W) of features (N,C,H,W): (N,C,C)."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)                                 # (N, C, HW)
    return f @ f.transpose(1, 2) / (c * h * w)                    # (N, C, C)


STYLE_VARIANTS = ("vgg5", "relu1_1")


def layer_style_loss(feat: torch.Tensor, style_gram: torch.Tensor, variant: str = "vgg5") -> torch.Tensor:
    """One layer's style distance of features (N,C,H,W) to the style's ``gram`` (1,C,C): (N,).

    ``"vgg5"`` (paper text): ||G - G_s||_F^2 with G = F F^T / (CHW). ``"relu1_1"`` (the authors):
    ``MSELoss`` between Grams normalised by HW only, i.e. mean over C^2 of (C (G - G_s))^2 (the same
    number for one layer; the variant differs in using relu1_1 alone).
    """
    d = gram(feat) - style_gram                                   # (N, C, C)
    if variant == "vgg5":
        return d.pow(2).sum((1, 2))
    if variant == "relu1_1":
        return (d * feat.shape[1]).pow(2).mean((1, 2))
    raise ValueError(f"reward.style_variant must be one of {STYLE_VARIANTS}, got {variant!r}")


class StyleLoss(nn.Module):
    """Sum over feature layers (VGG19 by default) of ||G(x) - G(style)||_F^2; style Grams once.

    ``cfg_reward.style_variant = "relu1_1"``: the authors' loss, relu1_1 only (``layer_style_loss``).
    The style Grams are of ``style_target(style, cfg_reward.loss_size)`` (the whole image, squashed
    to loss_size x loss_size when loss_size > 0).
    """

    def __init__(self, cfg_reward, style: torch.Tensor, device: Device = "cpu"):
        super().__init__()
        self.net = STYLE_NETS.pick(cfg_reward.style_net)(cfg_reward, device)   # (x in [0,1], layers) -> {layer: features}
        self.variant = cfg_reward.style_variant
        if self.variant not in STYLE_VARIANTS:
            raise ValueError(f"reward.style_variant must be one of {STYLE_VARIANTS}, got {self.variant!r}")
        layers = ("relu1_1",) if self.variant == "relu1_1" else tuple(cfg_reward.style_layers)
        unknown = [n for n in layers if n not in self.net.layer_names]
        if not layers or unknown:
            raise ValueError(f"unknown {cfg_reward.style_net} style layers {unknown or layers}; "
                             f"choose from {sorted(self.net.layer_names)}")
        self.layers = layers
        style = style_target(_as_batch(style, "style image"), cfg_reward.loss_size)
        with torch.no_grad():
            grams = [gram(f) for f in self.features(style.to(device))]
        for name, g in zip(layers, grams):
            self.register_buffer(f"style_gram_{name}", g)        # (1, C, C)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The network's activations at the chosen layers for x (N,3,H,W) in [0,1]."""
        feats = self.net(x, self.layers)
        return [feats[n] for n in self.layers]

    def score(self, cur, prev, originals, flows, reference=None) -> torch.Tensor:
        return self(cur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loss = x.new_zeros(x.shape[0])                            # (N,)
        for name, f in zip(self.layers, self.features(x)):
            g_s = getattr(self, f"style_gram_{name}")             # (1, C, C)
            loss = loss + layer_style_loss(f, g_s, self.variant)
        return loss


# --------------------------------------------------------------------------- content
class ContentLoss(nn.Module):
    """LPIPS (AlexNet, v0.1, by default) between a stylized frame and its original frame: (N,)."""

    def __init__(self, cfg_reward, device: Device = "cpu"):
        super().__init__()
        self.lpips = CONTENT_NETS.pick(cfg_reward.content_net)(cfg_reward, device)

    def score(self, cur, prev, originals, flows, reference=None) -> torch.Tensor:
        return self(cur, originals)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        for name, t in (("stylized", x), ("reference", ref)):
            lo, hi = float(t.detach().min()), float(t.detach().max())   # no grad: no scalar warning
            if lo < -1e-4 or hi > 1 + 1e-4:
                raise ValueError(f"ContentLoss expects {name} frames in [0,1], got range "
                                 f"[{lo:.3g}, {hi:.3g}]; convert with (x + 1) / 2 or clamp(0, 1)")
        if not x.requires_grad and x.shape == ref.shape and torch.equal(x, ref):  # Table 1's input row: a
            return x.new_zeros(x.shape[0])                        # frame's distance to itself is 0 (no passes)
        if getattr(self.lpips, "unit_range", False):              # our networks take [0,1] as given
            return self.lpips(x, ref).flatten()                   # (N,)
        # LPIPS wants [-1,1] (the authors' code fed [0,1], which shifts every activation)
        return self.lpips(2 * x - 1, 2 * ref - 1).flatten()      # (N,)


# --------------------------------------------------------------------------- temporal
def temporal_loss(prev: torch.Tensor, cur: torch.Tensor, fw: torch.Tensor, bw: torch.Tensor,
                  mask_fw: torch.Tensor, mask_bw: torch.Tensor) -> torch.Tensor:
    """Bidirectional masked L1 between consecutive frames aligned by the original video's flow.

    prev, cur (N,3,H,W); fw = flow prev->cur, bw = flow cur->prev (N,2,H,W) in pixels;
    mask_fw: prev's pixels visible in cur, mask_bw: cur's pixels visible in prev (N,1,H,W).
    """
    l_fw = masked_mean((prev - warp(cur, fw)).abs(), mask_fw)   # (N,) prev vs cur pulled back
    l_bw = masked_mean((cur - warp(prev, bw)).abs(), mask_bw)   # (N,) cur vs prev pushed on
    return 0.5 * (l_fw + l_bw)


class TemporalLoss(nn.Module):
    """``temporal_loss`` as a reward term (no parameters)."""

    def score(self, cur, prev, originals, flows, reference=None) -> torch.Tensor:
        return temporal_loss(prev, cur, flows["fw"], flows["bw"], flows["mask_fw"], flows["mask_bw"])


# --------------------------------------------------------------------------- fidelity to N(I_t)
class FidelityLoss(ContentLoss):
    """The content network's perceptual distance between a frame and the per-frame stylization N(I_t)
    of the same input frame (Lai et al. 2018's perceptual loss to the per-frame output): what keeps a
    consistent video the stylizer's video. 0 on N(I_t) itself, so never divided by the baseline's."""

    relative = False

    def score(self, cur, prev, originals, flows, reference=None) -> torch.Tensor:
        if reference is None:
            raise ValueError("the 'fidelity' reward term needs the per-frame stylization N(I_t) (reference=...)")
        return self(cur, reference)


# --------------------------------------------------------------------------- registry
# name -> builder(cfg_reward, style (1,3,Hs,Ws), device) -> term with .score(cur, prev, originals, flows)
REWARDS = Registry("reward term", "reward.terms", {
    "style": lambda cfg_reward, style, device: StyleLoss(cfg_reward, style, device),
    "content": lambda cfg_reward, style, device: ContentLoss(cfg_reward, device),
    "temporal": lambda cfg_reward, style, device: TemporalLoss(),
    "fidelity": lambda cfg_reward, style, device: FidelityLoss(cfg_reward, device),
})
WEIGHT_FIELDS = {"temporal": "w_temp"}  # the paper's short name for the temporal weight


def weight(cfg_reward, name: str) -> float:
    """The weight of term ``name``: ``cfg_reward.weights[name]``, else ``cfg_reward.w_<name>``."""
    if name in cfg_reward.weights:
        return float(cfg_reward.weights[name])
    field_name = WEIGHT_FIELDS.get(name, f"w_{name}")
    if not hasattr(cfg_reward, field_name):
        raise ValueError(f"reward term {name!r} has no weight; set reward.weights.{name}=...")
    return getattr(cfg_reward, field_name)


NORMALIZATIONS = ("none", "baseline")
EPS = 1e-8  # floor of a baseline term used as a divisor (a term that is exactly 0 on the baseline)


def relative(name: str) -> bool:
    """Whether term ``name`` is divided by the baseline's under ``normalize="baseline"`` (a distance to
    N(I_t) is 0 on the baseline: it stays in its own units)."""
    return name not in ABSOLUTE_TERMS


ABSOLUTE_TERMS = ("fidelity",)


def weighted_reward(terms, cfg_reward, base=None):
    """-(sum of weight * term) over ``cfg_reward.terms``, in that order: the ONE weighted sum.

    ``terms`` maps names to per-frame tensors, floats or pandas columns. With
    ``cfg_reward.normalize == "baseline"`` each term is divided by ``base[name]``, the per-frame
    baseline's value of that term on the SAME frame, so a weight trades relative changes: with
    10/1/10, 1 % less temporal loss is worth 10 % more content loss whatever the terms' raw scales
    (on real critics the raw Gram term can be 100x the temporal one). Chosen over a running
    normalisation because it is stationary (the scale never drifts with the policy, the baseline
    always scores -sum(w)), per frame (hard frames do not dominate), and needs no state in a checkpoint.
    Absolute terms (``ABSOLUTE_TERMS``: distances to N(I_t), 0 on the baseline) keep their units.
    """
    norm = normalised(terms, cfg_reward, base)
    return -sum(weight(cfg_reward, name) * norm[name] for name in cfg_reward.terms)


def normalised(terms, cfg_reward, base=None) -> dict:
    """Each term of ``cfg_reward.terms`` as the weighted sum and the constraints read it: divided by the
    baseline's on the same frame (``normalize="baseline"``, relative terms) and floored at 1 (``hinge``)."""
    mode, hinge = cfg_reward.normalize, tuple(cfg_reward.hinge)
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown reward.normalize {mode!r}; choose one of {NORMALIZATIONS}")
    if mode == "baseline" and base is None:
        raise ValueError("reward.normalize='baseline' needs the baseline's terms of the same frames")
    if hinge and mode != "baseline":
        raise ValueError("reward.hinge needs reward.normalize='baseline' (it floors term / baseline term at 1)")
    out = {}
    for name in cfg_reward.terms:
        term = terms[name]
        if mode == "baseline" and relative(name):
            b = base[name]
            term = term / (b.clamp_min(EPS) if torch.is_tensor(b) else max(float(b), EPS))
        if name in hinge:                      # no credit for beating the baseline, a penalty for losing to it
            term = term.clamp_min(1.0) if torch.is_tensor(term) else np.maximum(term, 1.0)
        out[name] = term
    return out


class RewardModel(nn.Module):
    """The reward terms of ``cfg.reward.terms`` (frozen critics) and their weights."""

    def __init__(self, cfg_reward, style: torch.Tensor, device: Device = "cpu", chunk: int = 16):
        super().__init__()
        self.cfg_reward = cfg_reward
        self.device = torch.device(device)
        self.chunk = chunk
        self.names = tuple(cfg_reward.terms)
        self._fixed = None                                        # (key, originals, flows, both at the loss size)
        for name in self.names:                                   # e.g. self.style, self.content
            self.add_module(name, REWARDS.pick(name)(cfg_reward, style, device))

    @classmethod
    def from_config(cls, cfg_reward, style: torch.Tensor, device: Device = "cpu") -> "RewardModel":
        return cls(cfg_reward, style, device)

    @torch.no_grad()
    def terms(self, stylized: torch.Tensor, originals: torch.Tensor, flows: dict, base=None, reference=None,
              loss_size: Optional[int] = None) -> dict:
        """Every term for frames 1..T-1: dict of (T-1,) tensors (the terms' names, then "reward").

        stylized, originals (T,3,H,W) in [0,1]; flows: fw, bw (T-1,2,H,W), mask_fw, mask_bw
        (T-1,1,H,W) of the original frames; ``base``: the baseline's terms of the same frames
        (needed by ``reward.normalize="baseline"``; None = these frames ARE the baseline);
        ``reference``: N(I_t) (T,3,H,W), for terms that measure fidelity to it.
        Computed at ``reward.loss_size`` (``loss_inputs``), or at ``loss_size`` when given: a training
        window is scored at the scale its whole frame is (``episodes.crop_episode``).
        """
        return self.differentiable_terms(stylized, originals, flows, base, reference, loss_size)

    def differentiable_terms(self, stylized, originals, flows: dict, base=None, reference=None,
                             loss_size: Optional[int] = None) -> dict:
        """``terms`` with autograd on (pathwise learners backpropagate the reward into the action)."""
        _check_clip(stylized, originals, flows)
        if reference is not None and reference.shape != stylized.shape:
            raise ValueError(f"reference {tuple(reference.shape)} and stylized {tuple(stylized.shape)} frames differ")
        stylized, originals, flows, reference = self.loss_inputs(stylized, originals, flows, reference, loss_size)
        dev = self.device
        out: dict = {name: [] for name in self.names}
        T = stylized.shape[0]
        for s in range(1, T, self.chunk):                         # frames s..e-1 and their pasts
            e = min(T, s + self.chunk)
            cur = stylized[s:e].to(dev).float()                   # (B, 3, H, W)
            prev = stylized[s - 1:e - 1].to(dev).float()          # (B, 3, H, W)
            f = {k: flows[k][s - 1:e - 1].to(dev).float() for k in ("fw", "bw", "mask_fw", "mask_bw")}
            orig = originals[s:e].to(dev).float()                 # (B, 3, H, W)
            ref = None if reference is None else reference[s:e].to(dev).float()
            for name in self.names:
                out[name].append(getattr(self, name).score(cur, prev, orig, f, ref))
        terms = {k: torch.cat(v) for k, v in out.items()}         # each (T-1,)
        base = base if base is not None else {k: v.detach() for k, v in terms.items()}
        terms["reward"] = weighted_reward(terms, self.cfg_reward, base)
        return terms

    def loss_inputs(self, stylized: torch.Tensor, originals: torch.Tensor, flows: dict, reference=None,
                    loss_size: Optional[int] = None):
        """Frames (T,3,H,W), originals, flows and the reference at ``reward.loss_size`` (see
        ``loss_inputs``). The fixed inputs at that size are remembered for the last clip: every row
        scored on it shares them, and so the features the critics remember for them."""
        short = self.cfg_reward.loss_size if loss_size is None else loss_size
        hw = loss_hw(stylized.shape[-2], stylized.shape[-1], short)
        key = (RecentInputs.key(originals), RecentInputs.key(flows["fw"]),
               None if reference is None else RecentInputs.key(reference), tuple(hw))
        if self._fixed is None or self._fixed[0] != key:
            ref = None if reference is None else resize(reference, hw)
            self._fixed = (key, originals, flows, reference, resize(originals, hw), resize_flows(flows, hw), ref)
        return resize(stylized, hw), self._fixed[4], self._fixed[5], self._fixed[6]


# --------------------------------------------------------------------------- checks
def _as_batch(img: torch.Tensor, what: str) -> torch.Tensor:
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[:2] != (1, 3):
        raise InputError(f"{what} must be (1,3,H,W) RGB in [0,1], got shape {tuple(img.shape)}",
                         fix="convert it to RGB (drop alpha, expand grayscale)")
    if not torch.isfinite(img).all():
        raise InputError(f"{what} contains NaN/inf values", fix="check how it was loaded")
    return img.float()


def _check_clip(stylized: torch.Tensor, originals: torch.Tensor, flows: dict) -> None:
    if stylized.ndim != 4 or stylized.shape[1] != 3 or stylized.shape != originals.shape:
        raise InputError(f"stylized {tuple(stylized.shape)} and original {tuple(originals.shape)} "
                         f"frames must both be (T,3,H,W)")
    T = stylized.shape[0]
    if T < 2:
        raise InputError(f"a clip needs at least 2 frames for the reward, got {T}",
                         fix="use a longer clip (data.n_frames >= 2)")
    missing = [k for k in ("fw", "bw", "mask_fw", "mask_bw") if k not in flows]
    if missing:
        raise InputError(f"flows dict lacks {missing}", fix="compute flows with vstlib.flow")
    for k in ("fw", "bw", "mask_fw", "mask_bw"):
        if flows[k].shape[0] != T - 1 or flows[k].shape[-2:] != stylized.shape[-2:]:
            raise InputError(f"flows[{k!r}] has shape {tuple(flows[k].shape)}, expected "
                             f"({T - 1}, ., {stylized.shape[-2]}, {stylized.shape[-1]})")
    if not (torch.isfinite(stylized).all() and torch.isfinite(originals).all()):
        raise InputError("frames contain NaN/inf values", fix="check the decoder output")


__all__ = ["loss_hw", "loss_inputs", "style_target", "gram", "StyleLoss", "ContentLoss", "TemporalLoss", "FidelityLoss",
           "relative", "normalised", "ABSOLUTE_TERMS", "temporal_loss", "layer_style_loss", "STYLE_VARIANTS",
           "REWARDS", "weight", "weighted_reward", "RewardModel", "NORMALIZATIONS"]
