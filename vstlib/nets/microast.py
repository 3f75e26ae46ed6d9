"""MicroAST (Wang et al., AAAI 2023): arbitrary style transfer with two tiny encoders and a decoder.

Four networks (vendored as ``assets/weights/microast_<part>.safetensors``, the source's keys):

    content_encoder, style_encoder (same layout, separate weights), RGB [0,1] -> [f1, f2]:
        enc1 = conv9x9 3->16, ReLU, conv3x3/2 16->32 g16, ReLU, conv1x1 32->32, ReLU,
               conv3x3/2 32->64 g32, ReLU, conv1x1 64->64, ReLU, ResBlock      -> f1 (N,64,H/4,W/4)
        enc2 = ResBlock(f1)                                                   -> f2 (N,64,H/4,W/4)
    modulator, style [f1, f2] -> w = [w1, w2], b = [b1, b2], each (N,64,1,1):
        conv3x3 64->64 g64 then global average pool (weight1/bias1 on f1, weight2/bias2 on f2)
    decoder(content f2, style stats, w, b):
        x = AdaIN(c2, s2); x = dec1(x, w2, b2); x = AdaIN(x, s1); x = dec2(x, w1, b1)  -> LATENT
        dec3 = up2, conv3x3 64->32 g32, ReLU, conv1x1 32->32, ReLU, up2, conv3x3 32->16 g16,
               ReLU, conv1x1 16->16, ReLU, conv9x9 16->3                          -> RENDER

Every conv is ReflectionPad2d(k // 2) then Conv2d (key ``<name>.conv_layer.*``). ResBlock(x) =
x + conv2(relu(conv1(x))); dec1/dec2 are filter-modulated ResBlocks (``_ModResBlock``). AdaIN uses
per-channel mean and unbiased std over H*W (var + 1e-5); ``alpha`` blends with its input.
Upsampling is bilinear (align_corners=False). The content encoder's f1 is not used by the decoder.

The split used by the backbone: ``latent`` = dec2's output (N,64,H/4,W/4), the modulated feature
right before dec3; ``render`` = dec3(latent) clamped to [0,1] (the raw output overshoots to about
[-0.3, 1.3]). Sizes that are not multiples of 4 are reflect-padded on the bottom/right (so latent
cell (i, j) covers pixels 4i..4i+3, 4j..4j+3) and the render is cropped back. Style statistics
(``StyleCode``) are computed once per style image; the style may have any size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vstlib import paths
from vstlib.errors import InputError
from vstlib.nets.weights import load_weights

PARTS = ("content_encoder", "style_encoder", "modulator", "decoder")
LATENT_CHANNELS = 64
SCALE = 4          # the latent is 1/4 of the image on each axis
EPS = 1e-5
MIN_SIDE = 8       # the 3x3 reflect pads at 1/4 resolution need 2 cells


class _Conv(nn.Module):
    """ReflectionPad2d(k // 2) then Conv2d."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.pad = k // 2
        self.conv_layer = nn.Conv2d(cin, cout, k, stride=stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return self.conv_layer(x)


class _ResBlock(nn.Module):
    def __init__(self, c: int = LATENT_CHANNELS):
        super().__init__()
        self.conv1, self.conv2 = _Conv(c, c, 3), _Conv(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _ModResBlock(_ResBlock):
    """Filter-modulated ResBlock: the style's w scales and b mixes in each conv's input."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y1 = self.conv1(x)
        y3 = F.relu(w * y1 + b * x)
        y4 = self.conv2(y3)
        return x + w * y4 + b * y3


class Encoder(nn.Module):
    """RGB (N,3,H,W) in [0,1] -> [f1, f2], each (N,64,ceil(H/4),ceil(W/4))."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(
            _Conv(3, 16, 9), nn.ReLU(), _Conv(16, 32, 3, 2, groups=16), nn.ReLU(),
            _Conv(32, 32, 1), nn.ReLU(), _Conv(32, 64, 3, 2, groups=32), nn.ReLU(),
            _Conv(64, 64, 1), nn.ReLU(), _ResBlock())
        self.enc2 = nn.Sequential(_ResBlock())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.enc1(x)
        return [f1, self.enc2(f1)]


class Modulator(nn.Module):
    """Style [f1, f2] -> (w [w1, w2], b [b1, b2]), each (N,64,1,1)."""

    def __init__(self):
        super().__init__()
        c = LATENT_CHANNELS
        for name in ("weight1", "bias1", "weight2", "bias2"):
            setattr(self, name, nn.Sequential(_Conv(c, c, 3, groups=c)))

    def forward(self, s: list[torch.Tensor]) -> tuple[list, list]:
        gap = lambda m, f: m(f).mean((-2, -1), keepdim=True)            # noqa: E731
        w = [gap(self.weight1, s[0]), gap(self.weight2, s[1])]
        b = [gap(self.bias1, s[0]), gap(self.bias2, s[1])]
        return w, b


class Decoder(nn.Module):
    """dec1, dec2 (modulated ResBlocks at 1/4 resolution) and dec3 (1/4 -> RGB)."""

    def __init__(self):
        super().__init__()
        up = lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        self.dec1, self.dec2 = _ModResBlock(), _ModResBlock()
        self.dec3 = nn.Sequential(
            up(), _Conv(64, 32, 3, groups=32), nn.ReLU(), _Conv(32, 32, 1), nn.ReLU(),
            up(), _Conv(32, 16, 3, groups=16), nn.ReLU(), _Conv(16, 16, 1), nn.ReLU(),
            _Conv(16, 3, 9))


def mean_std(f: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std (sqrt(var + eps)) over H*W: (N,C,1,1) each."""
    var, mean = torch.var_mean(f.flatten(2), dim=2, correction=1)      # (N,C)
    return mean[..., None, None], (var + eps).sqrt()[..., None, None]


def adain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """x (N,C,h,w) renormalised to the style's per-channel ``mean``/``std``; blended with x by alpha."""
    mx, sx = mean_std(x)
    out = (x - mx) / sx * std + mean
    return out if alpha == 1.0 else alpha * out + (1 - alpha) * x


@dataclass
class StyleCode:
    """What the decoder needs of one style image, each (1,64,1,1): reusable across frames."""

    mean1: torch.Tensor
    std1: torch.Tensor
    mean2: torch.Tensor
    std2: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor


def pad4(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad (N,3,H,W) on the bottom/right to multiples of 4 (latent cells stay aligned)."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"MicroAST needs images of at least {MIN_SIDE}x{MIN_SIDE} px, got {h}x{w}",
                         fix="upscale the frames (e.g. a larger --size)")
    ph, pw = (-h) % SCALE, (-w) % SCALE
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


class MicroAST(nn.Module):
    """``stylize(content, style)`` = ``render(latent(content_features(content), style_code(style)))``."""

    latent_channels = LATENT_CHANNELS

    def __init__(self):
        super().__init__()
        self.content_encoder, self.style_encoder = Encoder(), Encoder()
        self.modulator, self.decoder = Modulator(), Decoder()

    def style_code(self, style: torch.Tensor) -> StyleCode:
        """style (1,3,Hs,Ws) in [0,1], any size -> its statistics and modulation filters."""
        s = self.style_encoder(style)                                   # [(1,64,hs,ws)] x2
        w, b = self.modulator(s)
        (m1, s1), (m2, s2) = mean_std(s[0]), mean_std(s[1])
        return StyleCode(m1, s1, m2, s2, w[0], b[0], w[1], b[1])

    def content_features(self, content: torch.Tensor) -> torch.Tensor:
        """content (N,3,H,W) in [0,1] -> f2 (N,64,ceil(H/4),ceil(W/4)) (padded as in the module doc)."""
        return self.content_encoder(pad4(content).contiguous(memory_format=torch.channels_last))[1]

    def latent(self, c2: torch.Tensor, code: StyleCode, alpha: float = 1.0) -> torch.Tensor:
        """Content f2 (N,64,h,w) + style -> dec2's output (N,64,h,w), the feature dec3 renders."""
        x = adain(c2, code.mean2, code.std2, alpha)
        x = self.decoder.dec1(x, code.w2, code.b2)
        x = adain(x, code.mean1, code.std1, alpha)
        return self.decoder.dec2(x, code.w1, code.b1).contiguous()          # one layout for callers

    def render(self, latent: torch.Tensor, size: Optional[tuple] = None) -> torch.Tensor:
        """latent (N,64,h,w) -> RGB (N,3,4h,4w) in [0,1], cropped to ``size`` (H, W) if given."""
        y = self.decoder.dec3(latent.contiguous(memory_format=torch.channels_last)).clamp(0, 1).contiguous()  # (N,3,4h,4w)
        return y if size is None else y[..., :size[0], :size[1]]

    def stylize(self, content: torch.Tensor, style, alpha: float = 1.0) -> torch.Tensor:
        """content (N,3,H,W), style (1,3,Hs,Ws) or its StyleCode -> (N,3,H,W) in [0,1]."""
        code = style if isinstance(style, StyleCode) else self.style_code(style)
        return self.render(self.latent(self.content_features(content), code, alpha), content.shape[-2:])

    def forward(self, content: torch.Tensor, style) -> torch.Tensor:
        return self.stylize(content, style)


def weight_path(part: str) -> os.PathLike:
    return paths.ASSETS / "weights" / f"microast_{part}.safetensors"


def part_module(net: MicroAST, part: str) -> nn.Module:
    return getattr(net, part)


def state_shapes(part: str) -> dict[str, tuple]:
    """Key -> shape of one part's state dict (the source's keys, e.g. ``enc1.0.conv_layer.weight``)."""
    return {k: tuple(v.shape) for k, v in part_module(MicroAST(), part).state_dict().items()}


def load_microast(weight_paths: Optional[dict] = None) -> MicroAST:
    """The vendored MicroAST (eval mode, frozen, float32); ``weight_paths``: {part: file} overrides."""
    net = MicroAST()
    for part in PARTS:
        p = (weight_paths or {}).get(part) or weight_path(part)
        part_module(net, part).load_state_dict(load_weights(p, f"MicroAST {part}", state_shapes(part)))
    # channels_last: oneDNN's convolutions run 1.5-2x faster on a CPU in this layout
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)


__all__ = ["MicroAST", "StyleCode", "Encoder", "Modulator", "Decoder", "adain", "mean_std", "pad4",
           "load_microast", "state_shapes", "weight_path", "PARTS", "LATENT_CHANNELS", "SCALE"]
