"""Backbone #2: a real fast style network N and the TAEF2 latent, for the cpu profile.

    per_frame  = N(I_t)                 (T,3,H,W)  the flickering per-frame stylization
    L_t        = E(N(I_t))              (T,32,H/8,W/8) TAEF2 latent: what the policy sees and acts on
    images     = D(L_t)                 (T,3,H,W)  the per-frame baseline the policy is compared to
    render(L)  = D(L)                   differentiable in L (pathwise learners)

The style image is not an input of N: each network was trained on one painting, chosen by
``style_net`` (wave, udnie, scream, wreck). ``stylize`` ignores ``style``'s pixels.
Frames are resized so that their SHORT side is ``resolution`` (0 = keep the size), keeping
their aspect ratio (TAEF2 pads to multiples of 8 and crops back).
Config fields (BackboneConfig): ``style_net``, ``resolution``, ``batch_size``.
Disk cache (``vstlib.cache``): one file per clip holding per_frame, latents and images, keyed
by the content hash of the input frames and the numbers-changing config fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from vstlib import cache
from vstlib.backbones.base import BaselineOutput, register
from vstlib.errors import InputError
from vstlib.nets.faststyle import PAINTINGS, STYLES, load_faststyle, painting_path
from vstlib.nets.taef2 import LATENT_CHANNELS, load_taef2
from vstlib.video.resize import resize, short_side_size


@dataclass
class FastStyleOutput(BaselineOutput):
    latents: Optional[torch.Tensor] = None     # (T,32,h,w) L_t = E(N(I_t))
    size: Optional[tuple] = None               # (H, W) of the frames: D(L) is cropped to it

    def crop(self, box: tuple, factor: int) -> "FastStyleOutput":
        import dataclasses

        out = super().crop(box, factor)
        return dataclasses.replace(out, size=(box[2] * factor, box[3] * factor))


@register("faststyle")
class FastStyle:
    latent_channels = LATENT_CHANNELS

    CACHE_VERSION = 1
    CACHE_KEYS = ("per_frame", "latents", "images")

    def __init__(self, style_net: str = "wave", batch_size: int = 4, device=None,
                 cache_dir: Optional[Path] = None, resolution: int = 0):
        if style_net not in STYLES:
            raise InputError(f"no fast style network named {style_net!r}",
                             fix=f"use --style {'|'.join(STYLES)}")
        self.style_net, self.batch_size, self.resolution = style_net, max(1, int(batch_size)), int(resolution)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cache_dir = cache_dir
        self.net = load_faststyle(style_net).to(self.device)
        self.ae = load_taef2().to(self.device)

    @classmethod
    def from_config(cls, cfg_backbone, device=None, cache_dir: Optional[Path] = None) -> "FastStyle":
        return cls(cfg_backbone.style_net, cfg_backbone.batch_size, device, cache_dir, cfg_backbone.resolution)

    @classmethod
    def select_style(cls, cfg_backbone, style: Optional[str]):
        """``--style`` (None, a network name or its painting's file) -> (backbone config, painting path).

        Each network was trained on one painting: any other image has no network (one clear line)."""
        import dataclasses

        if style is None:
            return cfg_backbone, Path(painting_path(cfg_backbone.style_net))
        name = str(style)
        if name not in STYLES:
            by_file = {p: n for n, p in PAINTINGS.items()}
            name = by_file.get(Path(name).name)
        if name is None:
            files = ", ".join(f"{n}={p}" for n, p in PAINTINGS.items())
            raise InputError(f"no fast style network for style {str(style)!r}",
                             fix=f"use --style {'|'.join(STYLES)} or their painting files ({files})")
        return dataclasses.replace(cfg_backbone, style_net=name), Path(painting_path(name))

    def _check(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or len(frames) == 0:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InputError(f"frames must be a (T,3,H,W) tensor in [0,1], got {shape}",
                             fix="convert with torch.from_numpy(x).permute(0,3,1,2).float()/255")
        x = frames.to(self.device, torch.float32)
        if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise InputError("frames must be finite and lie in [0,1]", fix="divide uint8 images by 255")
        x = x.clamp(0, 1)
        h, w = x.shape[-2:]
        if self.resolution > 0 and min(h, w) != self.resolution:     # short side -> resolution
            x = resize(x, short_side_size(h, w, self.resolution, multiple=1)).clamp(0, 1)
        return x

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> dict:
        """x (T,3,H,W) in [0,1] -> {per_frame, latents, images}, in batches of ``batch_size``."""
        size = tuple(x.shape[-2:])
        per_frame, latents, images = [], [], []
        for i in range(0, len(x), self.batch_size):
            n = self.net(x[i:i + self.batch_size]).clamp(0, 1)         # (B,3,H,W)
            z = self.ae.encode(n)                                      # (B,32,h,w)
            per_frame.append(n)
            latents.append(z)
            images.append(self.ae.decode(z, size))
        # clone out of inference mode: callers may use these in autograd (render's pathwise grads)
        return {"per_frame": torch.cat(per_frame).clone(), "latents": torch.cat(latents).clone(),
                "images": torch.cat(images).contiguous().clone()}

    def cache_path(self, x: torch.Tensor) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        part = {"backbone": self.name, "style_net": self.style_net, "version": self.CACHE_VERSION}
        return Path(self.cache_dir) / f"faststyle-{cache.key(cache.content_hash({'frames': x.cpu()}), part)}.safetensors"

    def stylize(self, frames: torch.Tensor, style: Optional[torch.Tensor] = None) -> FastStyleOutput:
        """frames (T,3,H,W) in [0,1] -> per_frame N(I_t), latents E(N(I_t)), images D(L_t); batched,
        disk-cached per clip (``style`` is unused: the network was trained on one painting)."""
        x = self._check(frames)                                        # (T,3,H',W')
        size = tuple(x.shape[-2:])
        path = self.cache_path(x)
        if path is None:
            t = self._run(x)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            t = cache.cached_tensors(path, lambda: {k: v.cpu() for k, v in self._run(x).items()},
                                     f"{self.style_net} stylization", expect=self.CACHE_KEYS)
            t = {k: v.to(self.device).float() for k, v in t.items()}
            if t["images"].shape != x.shape or t["latents"].shape[0] != len(x):
                path.unlink(missing_ok=True)                           # a stale file under a clashing key
                t = self._run(x)
        return FastStyleOutput(images=t["images"], per_frame=t["per_frame"], latents=t["latents"], size=size)

    def stream(self, chunks):
        """Stylize an iterable of frame chunks (T_i,3,H,W) -> yields FastStyleOutput per chunk,
        without the disk cache (videos of any length: memory bounded by one chunk)."""
        for frames in chunks:
            x = self._check(frames)
            t = self._run(x)
            yield FastStyleOutput(images=t["images"], per_frame=t["per_frame"], latents=t["latents"],
                                  size=tuple(x.shape[-2:]))

    def policy_latents(self, out: FastStyleOutput) -> torch.Tensor:
        return out.latents

    def render(self, latents: torch.Tensor, out: FastStyleOutput, idx: torch.Tensor) -> torch.Tensor:
        """latents (n,32,h,w) -> frames (n,3,H,W) in [0,1]; differentiable when grad is enabled."""
        if latents.shape[1:] != out.latents.shape[1:]:
            raise ValueError(f"latents {tuple(latents.shape)} do not match the clip's {tuple(out.latents.shape)}")
        return self.ae.decode(latents.to(self.device), out.size)


__all__ = ["FastStyle", "FastStyleOutput"]
