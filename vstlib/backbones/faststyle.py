"""Backbone #2 (DRAFT): a real fast style network N and the TAEF2 latent, for the cpu profile.

    per_frame  = N(I_t)                 (T,3,H,W)  the flickering per-frame stylization
    L_t        = E(N(I_t))              (T,32,H/8,W/8) TAEF2 latent: what the policy sees and acts on
    images     = D(L_t)                 (T,3,H,W)  the per-frame baseline the policy is compared to
    render(L)  = D(L)                   differentiable in L (pathwise learners)

The style image is not an input of N: each network was trained on one painting, chosen by
``style_net`` (wave, udnie, scream, wreck). ``stylize`` ignores ``style``'s pixels.
Frames keep their size and aspect ratio (TAEF2 pads to multiples of 8 and crops back).
Config fields (to add to BackboneConfig): ``style_net``, ``batch_size``. No disk cache yet
(waits for the shared cache module).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..nets.faststyle import STYLES, load_faststyle
from ..nets.taef2 import LATENT_CHANNELS, load_taef2
from ..utils import InputError
from .base import BaselineOutput, register


@dataclass
class FastStyleOutput(BaselineOutput):
    latents: Optional[torch.Tensor] = None     # (T,32,h,w) L_t = E(N(I_t))
    size: Optional[tuple] = None               # (H, W) of the frames: D(L) is cropped to it


@register("faststyle")
class FastStyle:
    latent_channels = LATENT_CHANNELS

    def __init__(self, style_net: str = "wave", batch_size: int = 4, device=None,
                 cache_dir: Optional[Path] = None):
        if style_net not in STYLES:
            raise InputError(f"no fast style network named {style_net!r}",
                             fix=f"use --style {'|'.join(STYLES)}")
        self.style_net, self.batch_size = style_net, int(batch_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cache_dir = cache_dir
        self.net = load_faststyle(style_net).to(self.device)
        self.ae = load_taef2().to(self.device)

    @classmethod
    def from_config(cls, cfg_backbone, device=None, cache_dir: Optional[Path] = None) -> "FastStyle":
        return cls(cfg_backbone.style_net, cfg_backbone.batch_size, device, cache_dir)

    def _check(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or len(frames) == 0:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InputError(f"frames must be a (T,3,H,W) tensor in [0,1], got {shape}",
                             fix="convert with torch.from_numpy(x).permute(0,3,1,2).float()/255")
        x = frames.to(self.device, torch.float32)
        if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise InputError("frames must be finite and lie in [0,1]", fix="divide uint8 images by 255")
        return x.clamp(0, 1)

    @torch.no_grad()
    def stylize(self, frames: torch.Tensor, style: Optional[torch.Tensor] = None) -> FastStyleOutput:
        """frames (T,3,H,W) in [0,1] -> per_frame N(I_t), latents E(N(I_t)), images D(L_t); batched."""
        x = self._check(frames)
        size = tuple(x.shape[-2:])
        per_frame, latents, images = [], [], []
        for i in range(0, len(x), self.batch_size):
            n = self.net(x[i:i + self.batch_size])                     # (B,3,H,W)
            z = self.ae.encode(n)                                      # (B,32,h,w)
            per_frame.append(n)
            latents.append(z)
            images.append(self.ae.decode(z, size))
        return FastStyleOutput(images=torch.cat(images).contiguous(), per_frame=torch.cat(per_frame),
                               latents=torch.cat(latents), size=size)

    def policy_latents(self, out: FastStyleOutput) -> torch.Tensor:
        return out.latents

    def render(self, latents: torch.Tensor, out: FastStyleOutput, idx: torch.Tensor) -> torch.Tensor:
        """latents (n,32,h,w) -> frames (n,3,H,W) in [0,1]; differentiable when grad is enabled."""
        if latents.shape[1:] != out.latents.shape[1:]:
            raise ValueError(f"latents {tuple(latents.shape)} do not match the clip's {tuple(out.latents.shape)}")
        return self.ae.decode(latents.to(self.device), out.size)


__all__ = ["FastStyle", "FastStyleOutput"]
