"""The backbone interface: what the rest of vstlib may ask of a per-frame stylizer.

A backbone stylizes every frame of a clip on its own (the flickering baseline), exposes the
latent the policy acts on, and renders perturbed latents back to frames:

    out = backbone.stylize(frames, style)            # frames (T,3,H,W), style (1,3,Hs,Ws) in [0,1]
    L = backbone.policy_latents(out)                 # (T,C,h,w) what the policy sees
    S = backbone.render(L[idx] + delta, out, idx)    # (n,3,H,W) in [0,1]; differentiable in delta

Implementations register under a name (``@register("diffusest")``) and the config picks one
(``cfg.backbone.name``); :func:`make_backbone` builds it from the backbone's own config section,
a device and a cache folder. Nothing outside ``vstlib/backbones`` needs more than this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, runtime_checkable

import torch

from vstlib.errors import InputError
from vstlib.registry import Registry
from vstlib.video.resize import resize, short_side_size


@dataclass
class BaselineOutput:
    """The per-frame baseline of one clip; backbones subclass it to carry their own state."""

    images: torch.Tensor                       # (T,3,H,W) the per-frame baseline D(L_t), float, contiguous
    per_frame: Optional[torch.Tensor] = None   # (T,3,H,W) the stylizer's own frames before the latent
                                               # round trip; None where it equals ``images``

    def crop(self, box: tuple, factor: int) -> "BaselineOutput":
        """The same baseline on a window: ``box`` = (y, x, h, w) in latent cells, ``factor`` pixels
        per cell. Tensor fields at pixel size are cropped to the pixel window, at latent size to
        the cell window (training on random crops, ``train.crop``); backbones whose ``render``
        needs more (e.g. the frame size) override it."""
        import dataclasses

        y, x, h, w = box
        H, W = self.images.shape[-2:]
        changes = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if torch.is_tensor(v) and v.ndim >= 3 and tuple(v.shape[-2:]) == (H, W):
                changes[f.name] = v[..., y * factor:(y + h) * factor, x * factor:(x + w) * factor].contiguous()
            elif torch.is_tensor(v) and v.ndim >= 3 and tuple(v.shape[-2:]) == (H // factor, W // factor):
                changes[f.name] = v[..., y:y + h, x:x + w].contiguous()
        return dataclasses.replace(self, **changes)


@runtime_checkable
class Backbone(Protocol):
    """A per-frame stylizer with a latent the policy can perturb."""

    name: str                                  # registry name (``cfg.backbone.name``)
    latent_channels: int                       # channels of the latent the policy sees and acts on

    def stylize(self, frames: torch.Tensor, style: torch.Tensor) -> BaselineOutput:
        """frames (T,3,H,W) in [0,1], style (1,3,Hs,Ws) in [0,1] -> the baseline (batched, disk-cached)."""
        ...

    def policy_latents(self, out: BaselineOutput) -> torch.Tensor:
        """(T,C,h,w): the latents L_t the policy observes and adds its residual to."""
        ...

    def render(self, latents: torch.Tensor, out: BaselineOutput, idx: torch.Tensor) -> torch.Tensor:
        """latents (n,C,h,w) (= policy_latents(out)[idx] + delta) of frames ``idx`` (n,) -> (n,3,H,W) in [0,1].

        Must stay differentiable w.r.t. ``latents`` when called with grad enabled (pathwise
        learners); callers that only score frames wrap it in ``torch.no_grad()``.
        """
        ...


BACKBONES = Registry("backbone", "backbone.name")


def register(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register("diffusest")`` makes ``cfg.backbone.name = "diffusest"`` build it."""
    def deco(cls: type) -> type:
        cls.name = name
        return BACKBONES.register(name)(cls)
    return deco


def make_backbone(cfg_backbone, device=None, cache_dir: Optional[Path] = None) -> Backbone:
    """The backbone ``cfg_backbone.name`` names, built by its ``from_config(cfg_backbone, device, cache_dir)``.

    ``cache_dir`` is a folder the backbone owns for its disk cache; ``None`` caches nothing.
    """
    cls = BACKBONES.pick(cfg_backbone.name)
    device = torch.device(device) if device is not None else torch.device("cpu")
    return cls.from_config(cfg_backbone, device=device, cache_dir=cache_dir)


def check_images(images, resolution: int, device, what: str = "frames", size: Optional[tuple] = None) -> torch.Tensor:
    """Validate (T,3,H,W) [or (3,H,W)] in [0,1] and resize -> (T,3,H',W') float32.

    (H', W') = ``size`` when given (the whole image squashed to it), else the short side at
    ``resolution`` with the aspect ratio kept and both sides multiples of 8 (``video.resize.short_side_size``;
    a square image becomes r x r). Bilinear with antialiasing; never a crop.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{what} must be a torch tensor (T,3,H,W) in [0,1], got {type(images).__name__}",
                         fix="convert with torch.from_numpy(x).permute(0,3,1,2).float()/255")
    x = images[None] if images.ndim == 3 else images
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        raise InputError(f"{what} must have shape (T,3,H,W), got {tuple(images.shape)}",
                         fix="drop alpha / repeat grayscale to 3 channels, channels first")
    x = x.to(device, torch.float32)
    if not torch.isfinite(x).all():
        raise InputError(f"{what} contain NaN or inf values", fix="check the decoder / input file")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise InputError(f"{what} must lie in [0,1] (got {x.min():.3g}..{x.max():.3g})",
                         fix="divide uint8 images by 255")
    hw = tuple(size) if size is not None else short_side_size(x.shape[-2], x.shape[-1], resolution)
    return resize(x, hw).clamp(0, 1)


__all__ = ["Backbone", "BaselineOutput", "BACKBONES", "register", "make_backbone", "check_images"]
