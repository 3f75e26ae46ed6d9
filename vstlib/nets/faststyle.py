"""Johnson et al.'s feed-forward style-transfer network, as trained by Engstrom's recipe (ml5's weights).

Layout (one network per painting; vendored as ``assets/weights/faststyle_<name>.safetensors``,
keys ``Variable``, ``Variable_1``, ... in TensorFlow's layouts: conv kernels HWIO, transposed-conv
kernels HWOI; per layer: kernel, then instance-norm shift, then scale):

    conv 9x9/1 -> 32, conv 3x3/2 -> 64, conv 3x3/2 -> 128,
    5 residual blocks (conv 3x3 -> 128, ReLU, conv 3x3 -> 128, + input),
    transposed conv 3x3/2 -> 64, transposed conv 3x3/2 -> 32, conv 9x9/1 -> 3,
    output RGB in [0,255] = tanh(x) * 150 + 255/2.

Every conv is followed by instance normalisation (biased variance, eps 1e-3, learned shift and
scale) and ReLU, except the second conv of a residual block and the last conv (no ReLU). Convs
carry no bias. Padding is TensorFlow's SAME: for a stride-2 3x3 conv on an even size that pads
one pixel on the bottom/right only; the transposed convs are its exact adjoint (full transposed
conv, then keep the first 2x rows/columns).

Input scaling: the network sees RGB in [0, 255] (ml5 and Engstrom's ``evaluate.py`` feed raw
pixels; training fed [0,1], which instance normalisation after the first bias-free conv makes
equivalent up to eps). tests/test_real_models.py pins the choice.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vstlib import paths
from vstlib.errors import InputError
from vstlib.nets.weights import load_weights

STYLES = ("wave", "udnie", "scream", "wreck")
# the painting each network was trained on (vendored under assets/styles/)
PAINTINGS = {"wave": "wave.jpg", "udnie": "udnie.jpg", "scream": "the_scream.jpg",
             "wreck": "the_shipwreck_of_the_minotaur.jpg"}
IN_SCALE = 255.0   # pixels in [0,1] -> the network's [0,255]
EPS = 1e-3

# (kind, in, out, kernel, stride, relu): the order of the TF variables (3 per layer)
LAYERS = ([("conv", 3, 32, 9, 1, True), ("conv", 32, 64, 3, 2, True), ("conv", 64, 128, 3, 2, True)]
          + [("conv", 128, 128, 3, 1, r) for _ in range(5) for r in (True, False)]
          + [("convT", 128, 64, 3, 2, True), ("convT", 64, 32, 3, 2, True), ("conv", 32, 3, 9, 1, False)])


def painting_path(style: str) -> os.PathLike:
    return paths.ASSETS / "styles" / PAINTINGS[style]


def weight_path(style: str) -> os.PathLike:
    return paths.ASSETS / "weights" / f"faststyle_{style}.safetensors"


def variable_names() -> list[str]:
    return ["Variable" if i == 0 else f"Variable_{i}" for i in range(3 * len(LAYERS))]


def tf_shapes() -> dict[str, tuple]:
    """Name -> TF shape of every variable, in layer order (kernel, shift, scale)."""
    out = {}
    names = iter(variable_names())
    for kind, cin, cout, k, _, _ in LAYERS:
        out[next(names)] = (k, k, cin, cout) if kind == "conv" else (k, k, cout, cin)
        out[next(names)] = (cout,)
        out[next(names)] = (cout,)
    return out


def same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF SAME padding (before, after) of one axis: the extra pixel goes after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _Layer(nn.Module):
    def __init__(self, kind: str, cin: int, cout: int, k: int, stride: int, relu: bool):
        super().__init__()
        self.kind, self.k, self.stride, self.relu = kind, k, stride, relu
        shape = (cout, cin, k, k) if kind == "conv" else (cin, cout, k, k)  # torch layouts
        self.weight = nn.Parameter(torch.zeros(shape))
        self.shift = nn.Parameter(torch.zeros(cout))
        self.scale = nn.Parameter(torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.kind == "conv":
            (t, b), (l, r) = same_pad(h, self.k, self.stride), same_pad(w, self.k, self.stride)
            y = F.conv2d(F.pad(x, (l, r, t, b)), self.weight, stride=self.stride)
        else:
            # adjoint of a SAME conv from (s*h, s*w): its padding before is
            # same_pad(s*h)[0]; drop that many leading rows, keep s*h
            y = F.conv_transpose2d(x, self.weight, stride=self.stride)
            (t, _), (l, _) = same_pad(self.stride * h, self.k, self.stride), same_pad(self.stride * w, self.k, self.stride)
            y = y[..., t:t + self.stride * h, l:l + self.stride * w]
        var, mean = torch.var_mean(y, dim=(-2, -1), keepdim=True, correction=0)
        y = (y - mean) * torch.rsqrt(var + EPS) * self.scale[:, None, None] + self.shift[:, None, None]
        return F.relu(y) if self.relu else y


class FastStyleNet(nn.Module):
    """(N,3,H,W) RGB in [0,1] -> (N,3,H,W) stylized RGB in [0,1] (any H, W)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(*spec) for spec in LAYERS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = x * IN_SCALE
        y = self.layers[2](self.layers[1](self.layers[0](y)))
        for i in range(3, 13, 2):                                      # residual blocks
            y = y + self.layers[i + 1](self.layers[i](y))
        for layer in self.layers[13:]:
            y = layer(y)
        y = torch.tanh(y) * 150 + 255 / 2                               # (N,3,>=H,>=W) in [-22.5, 277.5]
        # odd sizes come back up to 4 px larger (two ceil-halvings, two doublings)
        return (y[..., :h, :w] / 255).clamp(0, 1)

    def load_tf(self, tensors: dict) -> "FastStyleNet":
        """Load TF-layout variables (``Variable``, ``Variable_1``, ...)."""
        names = iter(variable_names())
        with torch.no_grad():
            for layer in self.layers:
                kernel = tensors[next(names)]                          # HWIO (conv) / HWOI (convT)
                # HWIO -> OIHW for conv; HWOI -> IOHW for conv_transpose: the same permutation
                layer.weight.copy_(kernel.permute(3, 2, 0, 1))
                layer.shift.copy_(tensors[next(names)])
                layer.scale.copy_(tensors[next(names)])
        return self


def load_faststyle(style: str = "wave", path: Optional[os.PathLike] = None) -> FastStyleNet:
    """The vendored network for ``style`` (one of STYLES), eval mode, frozen."""
    if style not in STYLES and path is None:
        raise InputError(f"no fast style network named {style!r}",
                         fix=f"use one of: {', '.join(STYLES)}")
    p = path if path is not None else weight_path(style)
    net = FastStyleNet().load_tf(load_weights(p, f"fast style network {style!r}", tf_shapes()))
    return net.eval().requires_grad_(False)
