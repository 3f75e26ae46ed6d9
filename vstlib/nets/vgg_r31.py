"""VGG-19 up to relu3_1: the "normalised" Caffe VGG of Gatys et al. (LinearStyleTransfer's vgg_r31.pth).

Vendored as ``assets/weights/vgg_r31.safetensors`` (keys conv1..conv6, the source's). Input: RGB in
[0,1], no other normalisation. Layout (every 3x3 conv after ReflectionPad2d(1)):

    conv1 1x1 3->3 (fixed: RGB [0,1] -> Caffe BGR*255 minus the ImageNet mean),
    conv2 3->64 ReLU (relu1_1), conv3 64->64 ReLU (relu1_2), maxpool 2/2,
    conv4 64->128 ReLU (relu2_1), conv5 128->128 ReLU (relu2_2), maxpool 2/2,
    conv6 128->256 ReLU (relu3_1)

conv1 is kept as its own layer rather than folded into conv2: it is exact as the source, costs a
1x1 conv on 3 channels, and keeps the vendored keys equal to the source's. The weights are
Caffe-trained on BGR and rescaled so each filter's mean activation is about 1 (relu3_1 mean 0.72
on scikit-image's chelsea): they are not torchvision's and must not see mean/std-normalised RGB.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn

from vstlib import paths
from vstlib.nets.memo import RecentInputs
from vstlib.nets.weights import load_weights

LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")
CONVS = (("conv2", 3, 64), ("conv3", 64, 64), ("conv4", 64, 128), ("conv5", 128, 128), ("conv6", 128, 256))
POOL_AFTER = ("conv3", "conv5")


def weight_path() -> os.PathLike:
    return paths.ASSETS / "weights" / "vgg_r31.safetensors"


class VGGR31(nn.Module):
    """RGB (N,3,H,W) in [0,1] -> {relu1_1 (N,64,H,W), relu1_2, relu2_1 (N,128,H/2,W/2), relu2_2,
    relu3_1 (N,256,H/4,W/4)}; ``sequential()`` is the same network as one ``nn.Sequential``. The
    features of the last four inputs are remembered (``memo.RecentInputs``): a frozen network asked
    twice for the same frames (the reward's style, content and fidelity terms) runs once, and the
    originals and N(I_t) every scored row is compared with are encoded once per clip."""

    layer_names = LAYERS

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        for name, cin, cout in CONVS:
            setattr(self, name, nn.Conv2d(cin, cout, 3))
        self.memo = RecentInputs(4)        # a row's frames, the originals and N(I_t): scored rows share the last two

    def sequential(self) -> tuple[nn.Sequential, dict[str, int]]:
        """(the layers in order, sharing this module's convs; {relu name: index in it})."""
        mods: list[nn.Module] = [self.conv1]
        names: dict[str, int] = {}
        for (name, _, _), relu in zip(CONVS, LAYERS):
            mods += [nn.ReflectionPad2d(1), getattr(self, name), nn.ReLU()]
            names[relu] = len(mods) - 1
            if name in POOL_AFTER:
                mods.append(nn.MaxPool2d(2, 2))
        return nn.Sequential(*mods), names

    def forward(self, x: torch.Tensor, layers: tuple = LAYERS) -> dict[str, torch.Tensor]:
        return self.memo.get(x, tuple(layers), self.features)

    def features(self, x: torch.Tensor, layers: tuple = LAYERS) -> dict[str, torch.Tensor]:
        seq, names = self.sequential()
        x = x.contiguous(memory_format=torch.channels_last)
        want = {names[n]: n for n in layers}
        out = {}
        for i, layer in enumerate(seq[:max(want) + 1]):                 # stop at the deepest asked
            x = layer(x)
            if i in want:
                out[want[i]] = x
        return out


def state_shapes() -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in VGGR31().state_dict().items()}


def load_vgg_r31(path: Optional[os.PathLike] = None) -> VGGR31:
    """The vendored VGG-19 trunk to relu3_1 (eval mode, frozen, float32)."""
    net = VGGR31()
    net.load_state_dict(load_weights(path or weight_path(), "VGG-19 relu3_1 trunk", state_shapes()))
    # channels_last: oneDNN's convolutions run about 2x faster on a CPU in this layout
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)


__all__ = ["VGGR31", "load_vgg_r31", "state_shapes", "weight_path", "LAYERS"]
