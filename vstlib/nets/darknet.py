"""Darknet-tiny, the reference Darknet ImageNet classifier (ml5's TF.js export), as a feature network.

Topology (from its Keras ``model.json``; ``scripts/vendor_assets.py`` checks it against LAYERS):
15 blocks of conv (no bias, SAME) + batch norm (eps 1e-3) + LeakyReLU(0.1), 2x2/2 max pools
(SAME: a ragged last row/column is pooled on its own) after blocks 1, 2, 6 and 10, then a 1x1
conv -> 1000 with bias and global average pooling = the logits. Input: RGB in [0,1] (ml5 divides
pixels by 255), 224x224 for classification (bilinear, align_corners=True, as ml5 resizes).

Class indices follow Darknet's ``imagenet.labels.list`` order = the ILSVRC2012 devkit order
(index = ILSVRC2012_ID - 1): 0 kit fox, 1 English setter, ..., 7 Egyptian cat, 9 Persian cat.
This is NOT torchvision's sorted-wnid order (where Egyptian cat is 285).

Features are exposed by their Keras layer names ``leaky_re_lu_1`` .. ``leaky_re_lu_15`` (the
activations after each block, before any pool), for Gram / perceptual losses; ``embed`` is the
global average of ``leaky_re_lu_15`` (128-d, the penultimate layer).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vstlib import paths
from vstlib.nets.weights import load_weights

# (filters, kernel, max pool after): conv2d_1 .. conv2d_15
LAYERS = ((16, 3, True), (32, 3, True), (16, 1, False), (128, 3, False), (16, 1, False), (128, 3, True),
          (32, 1, False), (256, 3, False), (32, 1, False), (256, 3, True), (64, 1, False), (512, 3, False),
          (64, 1, False), (512, 3, False), (128, 1, False))
N_CLASSES = 1000
INPUT_SIZE = 224
BN_EPS = 1e-3
LEAK = 0.1
FEATURES = tuple(f"leaky_re_lu_{i + 1}" for i in range(len(LAYERS)))
EGYPTIAN_CAT = 7


def weight_path() -> os.PathLike:
    return paths.ASSETS / "weights" / "darknet_tiny.safetensors"


def tf_shapes() -> dict[str, tuple]:
    """Keras weight name -> shape (kernels HWIO)."""
    out, cin = {}, 3
    for i, (c, k, _) in enumerate(LAYERS, 1):
        out[f"conv2d_{i}/kernel"] = (k, k, cin, c)
        for s in ("gamma", "beta", "moving_mean", "moving_variance"):
            out[f"batch_normalization_{i}/{s}"] = (c,)
        cin = c
    out[f"conv2d_{len(LAYERS) + 1}/kernel"] = (1, 1, cin, N_CLASSES)
    out[f"conv2d_{len(LAYERS) + 1}/bias"] = (N_CLASSES,)
    return out


class DarknetTiny(nn.Module):
    """Frozen Darknet-tiny; batch norm folded into the convs (inference only)."""

    def __init__(self):
        super().__init__()
        convs, cin = [], 3
        for c, k, _ in LAYERS:
            convs.append(nn.Conv2d(cin, c, k, padding=k // 2))          # bias = folded BN shift
            cin = c
        self.convs = nn.ModuleList(convs)
        self.head = nn.Conv2d(cin, N_CLASSES, 1)

    def load_tf(self, t: dict) -> "DarknetTiny":
        with torch.no_grad():
            for i, conv in enumerate(self.convs, 1):
                bn = {s: t[f"batch_normalization_{i}/{s}"] for s in ("gamma", "beta", "moving_mean", "moving_variance")}
                g = bn["gamma"] / torch.sqrt(bn["moving_variance"] + BN_EPS)   # (C,)
                conv.weight.copy_(t[f"conv2d_{i}/kernel"].permute(3, 2, 0, 1) * g[:, None, None, None])
                conv.bias.copy_(bn["beta"] - bn["moving_mean"] * g)
            n = len(self.convs) + 1
            self.head.weight.copy_(t[f"conv2d_{n}/kernel"].permute(3, 2, 0, 1))
            self.head.bias.copy_(t[f"conv2d_{n}/bias"])
        return self

    def features(self, x: torch.Tensor, layers: Optional[Iterable[str]] = None,
                 logits: bool = False) -> dict[str, torch.Tensor]:
        """x (N,3,H,W) in [0,1], any size -> {layer name: (N,C,h,w)} (and "logits" (N,1000))."""
        want = set(FEATURES if layers is None else layers)
        unknown = want - set(FEATURES)
        if unknown:
            raise KeyError(f"unknown Darknet-tiny layers {sorted(unknown)}; use {FEATURES[0]} .. {FEATURES[-1]}")
        last = max(FEATURES.index(n) for n in want) if want and not logits else len(FEATURES) - 1
        out, y = {}, x.contiguous(memory_format=torch.channels_last)
        for i, (conv, (_, _, pool)) in enumerate(zip(self.convs, LAYERS)):
            y = F.leaky_relu(conv(y), LEAK)
            if FEATURES[i] in want:
                out[FEATURES[i]] = y
            if i == last:
                break
            if pool:
                y = F.max_pool2d(y, 2, 2, ceil_mode=True)
        if logits:
            out["logits"] = self.head(y).mean((-2, -1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> (N,1000) logits at 224x224."""
        return self.features(resize_input(x), layers=(), logits=True)["logits"]

    def embed(self, x: torch.Tensor, layer: str = FEATURES[-1]) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> (N,C) global-average-pooled features of ``layer``."""
        return self.features(x, (layer,))[layer].mean((-2, -1))


def resize_input(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, (size, size), mode="bilinear", align_corners=True)


def load_darknet(path: Optional[os.PathLike] = None) -> DarknetTiny:
    """The vendored Darknet-tiny (eval mode, frozen, float32)."""
    net = DarknetTiny().load_tf(load_weights(path or weight_path(), "Darknet-tiny", tf_shapes()))
    # channels_last: oneDNN's convolutions run about 2x faster on a CPU in this layout
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
