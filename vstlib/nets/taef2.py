"""TAEF2: the tiny autoencoder of FLUX.2's latent space (madebyollin/taesd's taef2_*.pth).

Encoder: RGB in [0,1] (N,3,H,W) -> latent (N,32,H/8,W/8). Decoder: latent -> RGB, clamped to [0,1].
Both are plain sequences (the state-dict keys are their indices, ``"11.pool.0.weight"``):

    encoder: conv3x3 3->64, B, conv/2, B B B, conv/2, B B B, conv/2, G G G, conv3x3 64->32
    decoder: soft clamp 3*tanh(z/3), conv3x3 32->64, ReLU, G G G, up2 conv, B B B, up2 conv,
             B B B, up2 conv, B, conv3x3 64->3

B = residual block relu(conv3(relu(conv2(relu(conv1(x))))) + x) with 3x3 convs at 64 channels;
G = B preceded by a mid-block branch x + conv1x1(relu(GroupNorm4(conv1x1(x)))) at 4x the width
(FLUX.2's variant). The stride-2 and post-upsample convs carry no bias; upsampling is nearest.
The latent is used raw (no shift/scale: those only map it to [0,1] for storing as an image).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vstlib import paths
from vstlib.nets.weights import load_weights

LATENT_CHANNELS = 32
SCALE = 8          # the latent is 1/8 of the image on each axis
WIDTH = 64


def _conv(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class _SoftClamp(nn.Module):
    def forward(self, z):
        return 3 * torch.tanh(z / 3)


class _Block(nn.Module):
    def __init__(self, mid_gn: bool = False):
        super().__init__()
        c = WIDTH
        self.conv = nn.Sequential(_conv(c, c), nn.ReLU(), _conv(c, c), nn.ReLU(), _conv(c, c))
        self.pool = (nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                                   nn.Conv2d(4 * c, c, 1, bias=False)) if mid_gn else None)

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


def _spec(tokens: str) -> nn.Sequential:
    """Build a sequence from a compact layout string (see the module docstring)."""
    mods = []
    for t in tokens.split():
        if t == "B":
            mods.append(_Block())
        elif t == "G":
            mods.append(_Block(mid_gn=True))
        elif t == "down":
            mods.append(_conv(WIDTH, WIDTH, stride=2, bias=False))
        elif t == "up":
            mods += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
        elif t == "relu":
            mods.append(nn.ReLU())
        elif t == "clamp":
            mods.append(_SoftClamp())
        else:                                                           # "conv<in>-<out>"
            cin, cout = (int(v) for v in t[4:].split("-"))
            mods.append(_conv(cin, cout))
    return nn.Sequential(*mods)


ENCODER = f"conv3-{WIDTH} B down B B B down B B B down G G G conv{WIDTH}-{LATENT_CHANNELS}"
DECODER = f"clamp conv{LATENT_CHANNELS}-{WIDTH} relu G G G up B B B up B B B up B conv{WIDTH}-3"


def weight_path(part: str) -> os.PathLike:
    return paths.ASSETS / "weights" / f"taef2_{part}.safetensors"


def state_shapes(part: str) -> dict[str, tuple]:
    net = _spec(ENCODER if part == "encoder" else DECODER)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    # channels_last: oneDNN's convolutions run ~25 % faster on CPU in this layout (decode of 20
    # frames at 256 px: 13.5 -> 10.3 s; a training step's decode + backward: 1.51 -> 1.30 s).
    # Inputs are converted and outputs made standard-contiguous, so callers always see one layout
    # (conv results differ in the last bits between layouts; a resumed run must match exactly).
    return x.contiguous(memory_format=torch.channels_last)


class TAEF2(nn.Module):
    """``encode`` (N,3,H,W) [0,1] -> (N,32,ceil(H/8),ceil(W/8)); ``decode`` back to [0,1].

    Sizes that are not multiples of 8 are padded (edge replication) before encoding; pass the
    original ``size`` to ``decode`` to crop the reconstruction back.
    """

    latent_channels = LATENT_CHANNELS

    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = _spec(ENCODER), _spec(DECODER)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = (-x.shape[-2]) % SCALE, (-x.shape[-1]) % SCALE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.encoder(_nhwc(x)).contiguous()

    def decode(self, z: torch.Tensor, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        y = self.decoder(_nhwc(z)).clamp(0, 1).contiguous()             # (N,3,8h,8w)
        return y if size is None else y[..., :size[0], :size[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[-2:])


def load_taef2(encoder_path: Optional[os.PathLike] = None,
               decoder_path: Optional[os.PathLike] = None) -> TAEF2:
    """The vendored TAEF2 (eval mode, frozen, float32)."""
    net = TAEF2()
    for part, module, p in (("encoder", net.encoder, encoder_path), ("decoder", net.decoder, decoder_path)):
        sd = load_weights(p or weight_path(part), f"TAEF2 {part}", state_shapes(part))
        module.load_state_dict(sd)
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
