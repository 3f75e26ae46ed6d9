"""Frozen networks used by rewards and evaluation: one place that knows where weights come from.

Each loader builds the same architecture in both profiles; only the weights differ:
random (smoke: offline, seeded by the caller) or pretrained (paper: torchvision / HF hub,
wrapped so that a missing download is one MissingWeightsError saying what to fetch and where).
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from vstlib.config import TINY
from vstlib.hub import load_torchvision_weights, weights_guard
from vstlib.nets.darknet import FEATURES, load_darknet, resize_input
from vstlib.nets.memo import RecentInputs
from vstlib.nets.vgg_r31 import load_vgg_r31
from vstlib.registry import Registry
from vstlib.runtime import fork_rng

Device = Union[str, torch.device]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _freeze(m: nn.Module, device: Device) -> nn.Module:
    m = m.to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# --------------------------------------------------------------------------- VGG19
def vgg19_layer_indices(features: nn.Sequential) -> dict[str, int]:
    """Name every ReLU of a VGG ``features`` stack: relu{block}_{conv} -> index (relu1_1 -> 1)."""
    names, block, conv = {}, 1, 0
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            conv += 1
        elif isinstance(m, nn.ReLU):
            names[f"relu{block}_{conv}"] = i
        elif isinstance(m, nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


# torchvision's vgg19().features (checked against vgg19_layer_indices in the tests)
VGG19_LAYERS: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3,
    "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15, "relu3_4": 17,
    "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26,
    "relu5_1": 29, "relu5_2": 31, "relu5_3": 33, "relu5_4": 35,
}


def vgg19_features(weights: Optional[str], device: Device = "cpu") -> nn.Sequential:
    """torchvision ``vgg19().features``, frozen, in eval mode.

    ``weights=None``: random init (seeded by the caller: smoke profile);
    ``"IMAGENET1K_V1"``: torchvision's ImageNet weights (paper profile; cached or an error).
    """
    import torchvision

    sd = None
    if weights is not None:  # fetch first: offline, fail before building 140M random params
        enum = getattr(torchvision.models.VGG19_Weights, weights, None)
        if enum is None:
            raise ValueError(f"unknown VGG19 weights {weights!r}; use None or 'IMAGENET1K_V1'")
        sd = load_torchvision_weights(enum, "VGG19")
    net = torchvision.models.vgg19(weights=None)
    if sd is not None:
        net.load_state_dict(sd)
    return _freeze(net.features, device)


# --------------------------------------------------------------------------- LPIPS
def lpips_alex(pretrained_trunk: bool, device: Device = "cpu") -> nn.Module:
    """LPIPS (AlexNet, v0.1) with its calibrated linear layers (shipped inside the lpips package).

    lpips 0.1.4 builds its trunk with torchvision's deprecated ``alexnet(pretrained=...)``, which
    would try to download; so the trunk is built random (``pnet_rand=True``) and, for the paper
    profile, the ImageNet AlexNet is loaded into it here through the offline-aware loader.
    """
    import lpips

    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" warning
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                            verbose=False)
    if pretrained_trunk:
        import torchvision

        sd = load_torchvision_weights(torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
                                      "AlexNet (LPIPS trunk)")
        # lpips splits alexnet.features into slice1..slice5, keeping the original child indices
        n = 0
        for k in range(1, model.net.N_slices + 1):
            for idx, layer in getattr(model.net, f"slice{k}").named_children():
                if isinstance(layer, nn.Conv2d):
                    with torch.no_grad():
                        layer.weight.copy_(sd[f"features.{idx}.weight"])
                        layer.bias.copy_(sd[f"features.{idx}.bias"])
                    n += 1
        assert n == 5, f"expected 5 AlexNet convs in the LPIPS trunk, loaded {n}"
    return _freeze(model, device)


# --------------------------------------------------------------------------- Darknet-tiny
# One layer per scale (the activations just before each 2x2 pool, then the deepest block)
DARKNET_STYLE_LAYERS = ("leaky_re_lu_1", "leaky_re_lu_2", "leaky_re_lu_6", "leaky_re_lu_10", "leaky_re_lu_14")
DARKNET_CONTENT_LAYERS = DARKNET_STYLE_LAYERS


class LayerStack(nn.Module):
    """Named activations of a plain layer stack (torchvision's VGG-19) for RGB in [0,1], ImageNet-
    normalised first; runs only up to the deepest layer asked."""

    def __init__(self, seq: nn.Sequential, names: dict[str, int]):
        super().__init__()
        self.seq, self.names, self.layer_names = seq, names, tuple(names)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, layers: tuple) -> dict[str, torch.Tensor]:
        want = {self.names[n]: n for n in layers}
        h, out = (x - self.mean) / self.std, {}
        for i, layer in enumerate(self.seq[:max(want) + 1]):
            h = layer(h)
            if i in want:
                out[want[i]] = h                                          # (N,C,h,w)
        return out


class DarknetFeatures(nn.Module):
    """Darknet-tiny's named activations for RGB in [0,1], the last two inputs remembered."""

    layer_names = FEATURES

    def __init__(self, device: Device = "cpu"):
        super().__init__()
        self.net, self.memo = _freeze(load_darknet(), device), RecentInputs(4)   # a frame batch, its references

    def forward(self, x: torch.Tensor, layers: tuple) -> dict[str, torch.Tensor]:
        return self.memo.get(x, tuple(layers), self.net.features)


_SHARED: dict = {}   # (network, device) -> one frozen instance: the reward's terms share its features


def shared(name: str, build: Callable[[], nn.Module], device: Device) -> nn.Module:
    key = (name, str(torch.device(device)))
    if key not in _SHARED:
        _SHARED[key] = _freeze(build(), device)
    return _SHARED[key]


class DarknetPerceptual(nn.Module):
    """A perceptual distance on Darknet-tiny features: LPIPS without its learned heads.

    Per layer: unit-normalise each pixel's feature vector over channels, squared difference summed
    over channels, averaged over pixels; then averaged over layers. Inputs in [0,1] (``unit_range``)
    -> (N,1,1,1), 0 for identical images, at most 4. The normalised features of the last inputs are
    remembered: a reference scored against many rows is encoded once.
    """

    unit_range = True                  # takes RGB in [0,1] (LPIPS takes [-1,1])

    def __init__(self, device: Device = "cpu", layers: tuple = DARKNET_CONTENT_LAYERS):
        super().__init__()
        self.net = shared("darknet", lambda: DarknetFeatures(device), device)
        self.layers, self.memo = tuple(layers), RecentInputs(4)

    def unit_features(self, x: torch.Tensor, layers: tuple) -> dict[str, torch.Tensor]:
        feats = self.net(x, layers)
        return {n: f * torch.rsqrt(f.pow(2).sum(1, keepdim=True).clamp_min(1e-20)) for n, f in feats.items()}

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        fx = self.memo.get(x, self.layers, self.unit_features)           # {layer: (N,C,h,w)} unit vectors
        fr = self.memo.get(ref, self.layers, self.unit_features)
        d = sum((fx[n] - fr[n]).pow(2).sum(1).mean((-2, -1)) for n in self.layers)   # (N,)
        return (d / len(self.layers)).view(-1, 1, 1, 1)


def darknet_embedder(cfg_eval, device: Device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """Table 2 on the cpu profile: unit-normalised pooled Darknet-tiny features (128-d) at 224x224."""
    net = _freeze(load_darknet(), device)

    @torch.no_grad()
    def embed(images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        out = [F.normalize(net.embed(resize_input(images[i:i + batch_size].to(device).float())), dim=-1)
               for i in range(0, images.shape[0], batch_size)]
        return torch.cat(out)                                            # (N,128)
    return embed


# --------------------------------------------------------------------------- VGG-19 to relu3_1 (vendored)
VGG_R31_CONTENT_LAYERS = ("relu2_1", "relu3_1")


class VggR31Perceptual(nn.Module):
    """The feature-reconstruction (perceptual) loss of Johnson et al. 2016 on the vendored VGG-19:
    sum over relu2_1 and relu3_1 of the mean squared feature difference (each layer normalised by
    C*H*W). It stands in for LPIPS, whose calibrated AlexNet trunk has no offline weights here; it is
    not calibrated to human judgements. Inputs in [0,1] (``unit_range``) -> (N,1,1,1), 0 for identical
    images, unbounded above. Shares its VGG with the Gram style term (one pass per frame).
    """

    unit_range = True

    def __init__(self, device: Device = "cpu", layers: tuple = VGG_R31_CONTENT_LAYERS):
        super().__init__()
        self.net = shared("vgg_r31", load_vgg_r31, device)
        self.layers = tuple(layers)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        fx, fr = self.net(x, self.layers), self.net(ref, self.layers)    # {layer: (N,C,h,w)}
        d = sum((fx[n] - fr[n]).pow(2).mean((1, 2, 3)) for n in self.layers)  # (N,)
        return d.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- by name
# cfg.reward.style_net -> fn(cfg_reward, device) -> features(x in [0,1], layers) -> {layer: (N,C,h,w)}, with
# ``layer_names``; cfg.reward.content_net -> fn(cfg_reward, device) -> module(x, ref) -> (N,1,1,1), inputs
# in [0,1] when it has ``unit_range`` (else [-1,1], LPIPS's convention).
# Another network (e.g. "darknet") is one function registered here.
STYLE_NETS = Registry("style network", "reward.style_net", {
    "vgg19": lambda cfg_reward, device: LayerStack(vgg19_features(cfg_reward.vgg_weights, device),
                                                   VGG19_LAYERS).to(device),
    "darknet": lambda cfg_reward, device: shared("darknet", lambda: DarknetFeatures(device), device),
    "vgg_r31": lambda cfg_reward, device: shared("vgg_r31", load_vgg_r31, device),
})
CONTENT_NETS = Registry("content network", "reward.content_net", {
    "lpips_alex": lambda cfg_reward, device: lpips_alex(cfg_reward.lpips_pretrained, device),
    "darknet": lambda cfg_reward, device: DarknetPerceptual(device),
    "vgg_r31": lambda cfg_reward, device: VggR31Perceptual(device),
})


# cfg.eval.embedder -> fn(cfg_eval, device) -> embed(images (N,3,H,W) in [0,1]) -> (N,D) unit
# vectors, for Table 2
def clip_embedder(cfg_eval, device: Device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    model, preprocess = clip_model(cfg_eval.clip_model, cfg_eval.clip_pretrained, device)
    return lambda images: clip_image_features(model, preprocess, images)


EMBEDDERS = Registry("evaluation embedder", "eval.embedder", {"clip": clip_embedder, "darknet": darknet_embedder})
# what tables and captions call each embedder (Table 2's caption reads it from the CSV)
EMBEDDER_NAMES: dict[str, str] = {"clip": "CLIP", "darknet": "Darknet-tiny (pooled features; not CLIP)"}


# --------------------------------------------------------------------------- CLIP
# A tiny random ViT CLIP (smoke profile): same code path as ViT-B-32, built offline in ~0.1 s.
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, patch_size=16, width=64, layers=2, head_width=32, mlp_ratio=2.0),
    text_cfg=dict(context_length=16, vocab_size=1000, width=32, heads=2, layers=1),
)


def _clip_preprocess(image_size: int, mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batched torch version of CLIP's PIL transform: shortest side -> size, centre crop, normalise."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N,3,H,W) in [0,1], got shape {tuple(images.shape)}")
        x = images.float()                                        # (N, 3, H, W)
        h, w = x.shape[-2:]
        s = image_size / min(h, w)
        nh, nw = max(image_size, round(h * s)), max(image_size, round(w * s))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - image_size) // 2, (nw - image_size) // 2
        x = x[..., top:top + image_size, left:left + image_size].clamp(0, 1)  # (N, 3, S, S)
        return (x - mean_t.to(x.device)) / std_t.to(x.device)

    return preprocess


def clip_quick_gelu(name: str, pretrained: Optional[str]) -> bool:
    """Whether the weights of ``pretrained`` were trained with QuickGELU (OpenAI's CLIPs were).

    open_clip's plain ``ViT-B-32`` config uses nn.GELU; loading the ``openai`` tag into it gives
    different embeddings from the real model (open_clip only warns), so the flag follows the tag.
    """
    import open_clip

    if not pretrained:
        return False
    return bool((open_clip.get_pretrained_cfg(name, pretrained) or {}).get("quick_gelu", False))


_CLIP_BUILT: dict = {}   # (name, pretrained, device) -> (model, preprocess): built once per process


def clip_model(name: str, pretrained: Optional[str], device: Device = "cpu"):
    """(model, preprocess) where ``preprocess`` maps (N,3,H,W) in [0,1] to the model's input.

    ``name="tiny"``: a tiny random ViT CLIP, always the same (seeded here, so CLIP scores of
    different smoke runs are comparable). Otherwise an open_clip architecture, e.g.
    ``("ViT-B-32", "openai")``; offline without cached weights -> MissingWeightsError.
    The model is frozen, so one build per (name, pretrained, device) is shared within a process
    (notebook 04 evaluates many runs).
    """
    key = (name, pretrained, str(torch.device(device)))
    if key not in _CLIP_BUILT:
        _CLIP_BUILT[key] = _build_clip(name, pretrained, device)
    return _CLIP_BUILT[key]


def _build_clip(name: str, pretrained: Optional[str], device: Device):
    import open_clip

    if name == TINY:
        with fork_rng():
            torch.manual_seed(0)
            model = open_clip.CLIP(**TINY_CLIP)
        mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    else:
        ids = ()
        if pretrained:
            cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
            ids = tuple(x for x in [cfg.get("hf_hub", "").strip("/")] if x)
        with weights_guard(f"CLIP {name} ({pretrained})", model_ids=ids):
            model, _, _ = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, force_quick_gelu=clip_quick_gelu(name, pretrained))
        mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return _freeze(model, device), _clip_preprocess(size, mean, std)


@torch.no_grad()
def clip_image_features(model: nn.Module, preprocess: Callable, images: torch.Tensor,
                        batch_size: int = 64) -> torch.Tensor:
    """L2-normalised CLIP image embeddings (N, D) of images (N,3,H,W) in [0,1], in batches."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = preprocess(images[i:i + batch_size].to(device))       # (B, 3, S, S)
        out.append(F.normalize(model.encode_image(x).float(), dim=-1))  # (B, D)
    return torch.cat(out)


__all__ = ["STYLE_NETS", "CONTENT_NETS", "EMBEDDERS", "EMBEDDER_NAMES", "DarknetPerceptual", "LayerStack",
           "DarknetFeatures", "shared", "VggR31Perceptual", "VGG_R31_CONTENT_LAYERS", "darknet_embedder", "DARKNET_STYLE_LAYERS", "DARKNET_CONTENT_LAYERS", "IMAGENET_MEAN", "IMAGENET_STD", "VGG19_LAYERS", "vgg19_layer_indices",
           "vgg19_features", "lpips_alex", "TINY_CLIP", "clip_quick_gelu", "clip_model", "clip_image_features"]
