"""Backbone #3: MicroAST, a real arbitrary-style network (any style image), for the cpu profile.

    c_t        = E_c(I_t)                          (T,64,H/4,W/4) content features (f2)
    code       = E_s(style), modulator             once per style image (AdaIN statistics, w, b)
    L_t        = dec2(AdaIN(dec1(AdaIN(c_t))))     (T,64,H/4,W/4) the latent: what the policy sees and acts on
    images     = dec3(L_t) = N(I_t)                (T,3,H,W) the per-frame stylization, in [0,1]
    render(L)  = dec3(L)                           differentiable in L (pathwise learners)

The latent is the modulated feature right before dec3, so the baseline is the stylizer's own
output: there is no extra encode/decode round trip and ``per_frame`` stays None. With
``backbone.latent="taef2"`` the policy acts instead in TAEF2's latent of the stylized frame,
L_t = E(N(I_t)) (32 ch at 1/8), rendered by TAEF2's decoder (``per_frame`` = N(I_t), ``images`` = D(L_t)):
the round trip of the fast style networks, kept to measure one latent against the other. Frames are
resized so that their SHORT side is ``resolution`` (0 = keep the size), aspect kept; sizes that
are not multiples of 4 are reflect-padded on the bottom/right and the render cropped back.
Config fields (BackboneConfig): ``resolution``, ``batch_size``, ``latent`` (``style_net`` is unused).
Disk cache (``vstlib.cache``): one file per (clip, style) holding latents and images, keyed by the
content hashes of the input frames and of the style image.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from vstlib import cache, paths
from vstlib.backbones.base import BaselineOutput, register
from vstlib.errors import InputError
from vstlib.nets.microast import LATENT_CHANNELS, StyleCode, load_microast
from vstlib.nets.taef2 import LATENT_CHANNELS as TAEF2_CHANNELS
from vstlib.nets.taef2 import load_taef2
from vstlib.video.io import load_image
from vstlib.video.prepare import ASSET_PREFIX, resolve_path
from vstlib.video.resize import resize, short_side_size

DEFAULT_STYLE = "starry_night"
STYLE_FOLDERS = ("styles", "styles-eval")          # vendored paintings, by file stem
MIN_STYLE_SIDE = 32
MIN_STYLE_STD = 1 / 255


def vendored_styles() -> dict[str, Path]:
    """{painting name: path} of every vendored painting (``starry_night`` -> assets/styles/starry_night.jpg)."""
    return {p.stem: p for d in STYLE_FOLDERS for p in sorted((paths.ASSETS / d).glob("*.jpg"))}


def style_fix() -> str:
    names = ", ".join(sorted(vendored_styles()))
    return f"pass --style with an existing photo or painting (PNG/JPEG, short side >= {MIN_STYLE_SIDE} px) or one of: {names}"


def resolve_style_path(style: Union[str, os.PathLike]) -> Path:
    """A vendored painting name, an ``assets:...`` path or any image path -> its file path."""
    s = str(style)
    known = vendored_styles()
    if s in known:
        return known[s]
    return resolve_path(s) if s.startswith(ASSET_PREFIX) else Path(s).expanduser()


def _read_style(p: Path) -> torch.Tensor:
    if not p.is_file():
        raise InputError("style image not found", p, style_fix())
    try:
        return load_image(p)                                      # (1,3,H,W) in [0,1]
    except InputError:
        raise InputError("unreadable style image (empty, corrupt or not an image)", p, style_fix()) from None


def check_style_image(style: Union[str, os.PathLike, torch.Tensor]) -> torch.Tensor:
    """THE style-image check: a file (a path or a vendored painting name) or a tensor (1,3,H,W) /
    (3,H,W) in [0,1] -> (1,3,H,W) float32 in [0,1]. A missing, unreadable, tiny (short side < 32 px)
    or single-colour (every channel's std < 1/255) image is one InputError naming it and the fix."""
    if isinstance(style, torch.Tensor):
        where, x = None, (style[None] if style.ndim == 3 else style)
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise InputError(f"style image must be a (1,3,H,W) tensor, got {tuple(style.shape)}", fix=style_fix())
        x = x.float()
        if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise InputError("style image must be finite and lie in [0,1]", fix="divide uint8 images by 255")
    else:
        where = resolve_style_path(style)
        x = _read_style(where)
    h, w = x.shape[-2:]
    if min(h, w) < MIN_STYLE_SIDE:
        raise InputError(f"style image is too small ({w}x{h} px; the short side must be >= {MIN_STYLE_SIDE})",
                         where, style_fix())
    if float(x.flatten(2).std(-1).max()) < MIN_STYLE_STD:
        raise InputError("style image is a single flat colour (nothing to transfer)", where, style_fix())
    return x.clamp(0, 1)


@dataclass
class MicroASTOutput(BaselineOutput):
    latents: Optional[torch.Tensor] = None     # (T,C,h,w) L_t: dec2's output (or TAEF2's E(N(I_t)))
    size: Optional[tuple] = None               # (H, W) of the frames: the render is cropped to it

    def crop(self, box: tuple, factor: int) -> "MicroASTOutput":
        """The window ``box`` = (y, x, h, w) in latent cells of ``factor`` pixels; a window at the
        bottom/right edge of a frame whose size is not a multiple of the factor keeps only the real pixels."""
        y, x, h, w = box
        top, left = y * factor, x * factor
        bottom, right = min((y + h) * factor, self.size[0]), min((x + w) * factor, self.size[1])
        px = (..., slice(top, bottom), slice(left, right))
        return dataclasses.replace(
            self, images=self.images[px].contiguous(), latents=self.latents[..., y:y + h, x:x + w].contiguous(),
            per_frame=self.per_frame[px].contiguous() if self.per_frame is not None else None,
            size=(bottom - top, right - left))


LATENTS = ("native", "taef2", "pixels")


@register("microast")
class MicroASTBackbone:
    CACHE_VERSION = 1

    def __init__(self, batch_size: int = 4, device=None, cache_dir: Optional[Path] = None, resolution: int = 0,
                 latent: str = "native"):
        if latent not in LATENTS:
            raise InputError(f"unknown backbone.latent {latent!r} for microast", fix=f"use one of {', '.join(LATENTS)}")
        self.batch_size, self.resolution, self.latent = max(1, int(batch_size)), int(resolution), latent
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cache_dir = cache_dir
        self.net = load_microast().to(self.device)
        self.ae = load_taef2().to(self.device) if latent == "taef2" else None
        self.latent_channels = {"taef2": TAEF2_CHANNELS, "pixels": 3}.get(latent, LATENT_CHANNELS)
        self._code: Optional[tuple[str, StyleCode]] = None             # (style hash, its code): one style at a time

    @classmethod
    def from_config(cls, cfg_backbone, device=None, cache_dir: Optional[Path] = None) -> "MicroASTBackbone":
        return cls(cfg_backbone.batch_size, device, cache_dir, cfg_backbone.resolution, cfg_backbone.latent)

    @classmethod
    def select_style(cls, cfg_backbone, style: Optional[str]):
        """``--style`` (None = starry_night, a vendored painting name or any image path) -> (backbone
        config, checked image path); a bad image is one InputError (``check_style_image``)."""
        p = resolve_style_path(style if style is not None else DEFAULT_STYLE)
        check_style_image(p)
        return cfg_backbone, p

    def _check(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or len(frames) == 0:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InputError(f"frames must be a (T,3,H,W) tensor in [0,1], got {shape}",
                             fix="convert with torch.from_numpy(x).permute(0,3,1,2).float()/255")
        x = frames.to(self.device, torch.float32)
        if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise InputError("frames must be finite and lie in [0,1]", fix="divide uint8 images by 255")
        h, w = x.shape[-2:]
        if self.resolution > 0 and min(h, w) != self.resolution:     # short side -> resolution
            x = resize(x, short_side_size(h, w, self.resolution, multiple=1))
        return x.clamp(0, 1)

    @torch.no_grad()
    def style_code(self, style: torch.Tensor, digest: str) -> StyleCode:
        """The style's statistics, computed once and reused while the style stays the same."""
        if self._code is None or self._code[0] != digest:
            self._code = (digest, self.net.style_code(style.to(self.device)))
        return self._code[1]

    # no_grad, not inference_mode: the outputs stay ordinary tensors that autograd may use later
    @torch.no_grad()
    def _run(self, x: torch.Tensor, code: StyleCode, decode: bool = True) -> dict:
        """x (T,3,H,W) in [0,1] -> {latents, images} (+ per_frame for the TAEF2 latent), in batches;
        ``decode=False`` (native latent only): the latents alone."""
        size = tuple(x.shape[-2:])
        out = {"latents": [], "images": [], "per_frame": []}
        for i in range(0, len(x), self.batch_size):
            L = self.net.latent(self.net.content_features(x[i:i + self.batch_size]), code)   # (B,64,h,w)
            if not decode:
                out["latents"].append(L)
                continue
            N = self.net.render(L, size)                               # (B,3,H,W) N(I_t)
            if self.ae is not None:                                    # the TAEF2 round trip
                L = self.ae.encode(N)                                  # (B,32,H/8,W/8)
                out["per_frame"].append(N)
                N = self.ae.decode(L, size)
            elif self.latent == "pixels":                              # the policy acts on N(I_t) itself
                L = N
            out["latents"].append(L)
            out["images"].append(N)
        return {k: torch.cat(v).contiguous() for k, v in out.items() if v}

    def cache_path(self, x: torch.Tensor, style_digest: str) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        part = {"backbone": self.name, "style": style_digest, "latent": self.latent, "version": self.CACHE_VERSION}
        return Path(self.cache_dir) / f"microast-{cache.key(cache.content_hash({'frames': x.cpu()}), part)}.safetensors"

    @property
    def lazy_decode(self) -> bool:
        """Whether ``stylize(decode=False)`` can skip the decoder: with a policy, each frame is then
        decoded once, after its action (`vst stylize`)."""
        return self.ae is None and self.latent == "native"

    def stylize(self, frames: torch.Tensor, style: torch.Tensor, decode: bool = True) -> MicroASTOutput:
        """frames (T,3,H,W), style (1,3,Hs,Ws) in [0,1] -> latents L_t and images dec3(L_t); batched,
        disk-cached per (clip, style). ``decode=False`` where ``lazy_decode``: latents only (images
        None), never cached."""
        x = self._check(frames)                                        # (T,3,H',W')
        s = check_style_image(style)
        digest = cache.content_hash({"style": s.cpu()})
        if not decode and self.lazy_decode:
            t = self._run(x, self.style_code(s, digest), decode=False)
            return MicroASTOutput(images=None, latents=t["latents"], per_frame=None, size=tuple(x.shape[-2:]))
        path = self.cache_path(x, digest)
        run = lambda: self._run(x, self.style_code(s, digest))        # noqa: E731
        if path is None:
            t = run()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            keys = ("latents", "images") + (("per_frame",) if self.ae is not None else ())
            t = cache.cached_tensors(path, lambda: {k: v.cpu() for k, v in run().items()},
                                     "MicroAST stylization", expect=keys)
            t = {k: v.to(self.device).float() for k, v in t.items()}
            if t["images"].shape != x.shape or t["latents"].shape[0] != len(x):
                path.unlink(missing_ok=True)                           # a stale file under a clashing key
                t = run()
        return MicroASTOutput(images=t["images"], latents=t["latents"], per_frame=t.get("per_frame"),
                              size=tuple(x.shape[-2:]))

    def policy_latents(self, out: MicroASTOutput) -> torch.Tensor:
        return out.latents

    def render(self, latents: torch.Tensor, out: MicroASTOutput, idx: torch.Tensor) -> torch.Tensor:
        """latents (n,C,h,w) -> frames (n,3,H,W) in [0,1] (dec3, or TAEF2's decoder; in batches);
        differentiable when grad is enabled."""
        if latents.shape[1:] != out.latents.shape[1:]:
            raise ValueError(f"latents {tuple(latents.shape)} do not match the clip's {tuple(out.latents.shape)}")
        L = latents.to(self.device)
        if self.latent == "pixels":                                    # the frame is its own latent
            return L.clamp(0, 1)
        decode = self.ae.decode if self.ae is not None else self.net.render
        return torch.cat([decode(L[i:i + self.batch_size], out.size) for i in range(0, len(L), self.batch_size)])


__all__ = ["MicroASTBackbone", "MicroASTOutput", "check_style_image", "resolve_style_path", "vendored_styles"]
