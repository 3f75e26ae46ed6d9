"""DiffuseST per-frame baseline on BLIP-Diffusion's components, batched over frames and cached.

DiffuseST (training-free style transfer) stylizes each frame of a clip:

0. resize the frames so their short side is ``cfg.resolution`` (aspect ratio kept, both sides
   multiples of 8: any H x W, latents (h, w) = (H/8, W/8)); the style image likewise, whole
   (never cropped);
1. encode the frame with the VAE (posterior mean x 0.18215);
2. DDIM-invert it with the empty prompt, keeping the latent at every timestep sampling visits;
3. embed the WHOLE style image with BLIP-Diffusion's Q-Former (squashed to its 224 x 224 input, as
   the snapshot's BlipImageProcessor does): its 16 query embeddings are spliced into the prompt
   ``"a <style_subject> <prompt>"`` (repeated 20x) at position 2 of the CLIP text encoder; the style
   image, squashed to the frames' H x W (its latent shares a UNet batch with theirs, as in the
   authors' ``torch.cat([style_lat, latents, latents])``), is DDIM-inverted too;
4. denoise from the inverted x_T with a batch ``[reference, unconditional, conditional]``
   (classifier-free guidance, scale 7.5). On *content* steps the reference branch is the frame's
   inverted latent at that timestep and its self-attention query+key and resnet features replace
   the targets'; on *style* steps the reference is the style image's inverted latent and its
   self-attention key+value replace the targets' (``injection.py``). The style reference is
   identical for every frame, so it runs once per step (batch ``2T+1``, not ``3T``);
5. decode with the VAE to images in [0, 1].

Two profiles, one code path: ``model_id == "tiny"`` builds the random twin (``tiny.py``, no
download); ``"Salesforce/blipdiffusion"`` loads the real pipeline (``hub.py``; offline without
cached weights: one :class:`~vstlib.errors.MissingWeightsError`).

    >>> from vstlib.config import get_config
    >>> sty = DiffuseST.from_config(get_config("smoke").backbone)       # doctest: +SKIP
    >>> out = sty(frames, style)          # frames (T,3,H,W), style (1,3,Hs,Ws) in [0,1]  # doctest: +SKIP
    >>> out.images.shape                                                 # doctest: +SKIP
    torch.Size([T, 3, 64, 64])
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from vstlib import cache
from vstlib.backbones.base import BaselineOutput, check_images, register
from vstlib.backbones.diffusest.blip import (
    empty_prompt_embedding,
    style_prompt_embedding,
)
from vstlib.backbones.diffusest.components import Components, make_scheduler
from vstlib.backbones.diffusest.hub import load_blipdiffusion
from vstlib.backbones.diffusest.injection import (
    InjectionState,
    injection_schedule,
    install_injection,
)
from vstlib.backbones.diffusest.sampler import SAMPLERS, Inversion
from vstlib.backbones.diffusest.tiny import tiny_components
from vstlib.config import TINY
from vstlib.runtime import torch_dtype


@dataclass
class StyleContext:
    """Prompt embeddings with the style image spliced in, and the style image's inversion."""
    cond: torch.Tensor                    # (1,L,D) prompt embedding with the 16 style queries
    uncond: torch.Tensor                  # (1,L,D) negative prompt (classifier-free guidance; "" = empty)
    inversion: Inversion                  # of the style image (T=1): style-step references

    def tensors(self) -> dict:
        return {"cond": self.cond, "uncond": self.uncond,
                **{f"inv_{k}": v for k, v in self.inversion.tensors().items()}}

    @classmethod
    def from_tensors(cls, d: dict) -> "StyleContext":
        inv = Inversion.from_tensors({k[4:]: v for k, v in d.items() if k.startswith("inv_")})
        return cls(d["cond"], d["uncond"], inv)


@dataclass(kw_only=True)
class DiffuseSTOutput(BaselineOutput):
    """The baseline plus what rendering a perturbed latent needs (``per_frame`` stays None)."""
    xT: torch.Tensor                      # (T,4,h,w) inverted noise latent, (h, w) = (H/8, W/8)
    z0: torch.Tensor                      # (T,4,h,w) final denoised latent (before decoding)
    inversion: Inversion                  # the frames' DDIM trajectories (content references)
    style_ctx: StyleContext


def _hash_tensor(x: torch.Tensor) -> str:
    x = x.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:24]


class _StageCache:
    """memory -> disk (``vstlib.cache``: content-hashed, validated, rebuilt if damaged) -> build,
    for the pipeline's stages (inversion, style context, output).

    Keys: stage kind, model id, a digest of the backbone config and hashes of the input tensors.
    ``folder=None`` caches nothing (benchmarks, tests that count UNet calls).
    """

    def __init__(self, folder: Optional[Path], model_id: str, digest: str, device: torch.device):
        self.folder, self.model_id, self.digest, self.device = folder, model_id, digest, device
        self._memo: dict = {}

    def key(self, kind: str, *parts: str) -> str:
        h = hashlib.sha256("|".join((kind, self.model_id, self.digest) + parts).encode())
        return f"{kind}-{h.hexdigest()[:24]}"

    def __call__(self, key: str, build: Callable, to_tensors: Callable, from_tensors: Callable):
        if self.folder is None:
            return build()
        if key in self._memo:
            return self._memo[key]
        # fresh results come back through the same contiguous CPU tensors a cache hit reads, so a
        # run resumed from partial caches is bit-identical to a fresh one (layouts change conv bits)
        tensors = cache.cached_tensors(self.folder / f"{key}.safetensors",
                                       lambda: {k: v.detach().cpu().contiguous() for k, v in to_tensors(build()).items()},
                                       f"DiffuseST {key.split('-')[0]} cache", metadata={"model_id": self.model_id})
        obj = from_tensors({k: v.to(self.device) for k, v in tensors.items()})
        self._memo[key] = obj
        return obj


@register("diffusest")
class DiffuseST:
    """DiffuseST baseline: ``stylize(frames, style)``, plus the latent a policy perturbs and renders.

    The policy acts on ``z0`` (one VAE decode per render) or ``xT`` (a full injected denoising
    pass per render), as ``cfg.injection`` says.
    """

    # backbone fields that do not change the numbers (kept out of cache keys: the xT and z0
    # ablations share one baseline cache; ``name`` is always this class)
    _KEY_IGNORES = ("injection", "batch_size", "name")

    def __init__(self, cfg, components: Components, device=None, cache_dir: Optional[Path] = None):
        self.cfg = cfg                      # BackboneConfig
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # half precision only on an accelerator (slow or unsupported on CPU)
        self.dtype = torch_dtype(cfg.dtype) if self.device.type != "cpu" else torch.float32
        c = components
        self.tokenizer = c.tokenizer
        self.scheduler = make_scheduler(cfg.sampler, c.scheduler)          # backbone.sampler: ddim | pndm
        self.text_encoder, self.qformer, self.unet, self.vae = (
            self._place(m) for m in (c.text_encoder, c.qformer, c.unet, c.vae))
        self.image_mean, self.image_std, self.ctx_begin_pos = c.image_mean, c.image_std, c.ctx_begin_pos
        self.latent_channels = int(self.vae.config.latent_channels)
        self.scale = float(self.vae.config.scaling_factor)
        self.unet_calls = 0                 # UNet forward passes (one per image batch)
        self.unet_images = 0                # images through the UNet (sum of batch sizes)
        self.step_log: list = []            # (timestep, mode) of the latest denoising steps
        self.state = InjectionState()
        self._hooks = install_injection(self.unet, self.state, cfg.injection_layers)
        self.unet.register_forward_pre_hook(self._count)
        self.sampler = SAMPLERS.pick(cfg.sampler)(self.scheduler, cfg.num_inference_steps, cfg.num_inversion_steps)
        self.timesteps = self.sampler.timesteps                               # distinct sampling, descending
        self.content_steps, self.style_steps = injection_schedule(self.timesteps, cfg.alpha,
                                                                  cfg.original_schedule)
        with torch.no_grad():
            self.null_emb = empty_prompt_embedding(self.tokenizer, self.text_encoder, self.device)  # (1,77,D)
            # unconditional + reference branches: DiffuseST uses its negative prompt there
            self.neg_emb = (empty_prompt_embedding(self.tokenizer, self.text_encoder, self.device, cfg.negative_prompt)
                            if cfg.negative_prompt else self.null_emb)                          # (1,77,D)
        key_fields = {k: v for k, v in asdict(cfg).items() if k not in self._KEY_IGNORES}
        digest = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
        self._cache = _StageCache(Path(cache_dir) if cache_dir is not None else None, cfg.model_id, digest,
                                  self.device)

    @classmethod
    def from_config(cls, cfg, device=None, cache_dir: Optional[Path] = None) -> "DiffuseST":
        """Build from ``cfg`` (a BackboneConfig); the tiny twin's tokenizers live in ``cache_dir``."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        if cfg.model_id == TINY:
            comps = tiny_components(cfg.seed, Path(cache_dir) / "tokenizers" if cache_dir is not None else None)
        else:
            dtype = torch_dtype(cfg.dtype) if device.type != "cpu" else torch.float32
            comps = load_blipdiffusion(cfg.model_id, dtype)
        return cls(cfg, comps, device, cache_dir)

    # ------------------------------------------------------------------ the pipeline
    def stylize(self, frames: torch.Tensor, style: torch.Tensor) -> DiffuseSTOutput:
        """DiffuseST on a clip: frames (T,3,H,W), style (1,3,Hs,Ws), both in [0,1]. Disk-cached."""
        # 1. check the inputs, resize them: short side at the backbone resolution, aspect kept
        x = self.prepare(frames)                                               # (T,3,H,W)
        s = self.prepare(style, "style image")[:1]                             # (1,3,Hs,Ws) whole
        # 2. VAE-encode and DDIM-invert every frame (cached by frame bytes)
        inversion = self.invert(x)                                             # xT (T,4,h,w)
        # 3. style prompt embedding and the style image's inversion at the frames' size (cached)
        style_ctx = self.style_context(s, tuple(x.shape[-2:]))

        @torch.no_grad()
        def build():
            # 4. denoise all frames from x_T with content/style injection
            z0 = self.denoise(inversion.xT, inversion, style_ctx)              # (T,4,h,w)
            # 5. decode
            return {"images": self.decode(z0), "z0": z0}                       # images (T,3,H,W)
        res = self._cache(self._cache.key("out", _hash_tensor(x), _hash_tensor(s)), build,
                          lambda d: d, lambda d: d)
        return DiffuseSTOutput(res["images"], xT=inversion.xT, z0=res["z0"], inversion=inversion,
                               style_ctx=style_ctx)

    __call__ = stylize

    # ------------------------------------------------------------------ for the policy
    def policy_latents(self, out: DiffuseSTOutput) -> torch.Tensor:
        """(T,4,h,w): the latent the policy perturbs (cfg.injection)."""
        if self.cfg.injection == "xT":
            return out.xT
        if self.cfg.injection == "z0":
            return out.z0
        raise ValueError(f"backbone.injection must be 'xT' or 'z0', got {self.cfg.injection!r}")

    def render(self, latents: torch.Tensor, out: DiffuseSTOutput, idx) -> torch.Tensor:
        """Perturbed policy latents (N,4,h,w) of frames ``idx`` (N,) -> images (N,3,H,W) in [0,1].

        "z0": one decode; "xT": a full injected denoising pass (with those frames' own content
        trajectories) then a decode. Differentiable w.r.t. ``latents`` under grad mode.
        """
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        latents = latents.to(self.device).float()
        if self.cfg.injection == "z0":
            return self.decode(latents)
        if self.cfg.injection == "xT":
            z0 = self.denoise(latents, out.inversion.select(idx.to(out.inversion.z.device)), out.style_ctx)
            return self.decode(z0)
        raise ValueError(f"backbone.injection must be 'xT' or 'z0', got {self.cfg.injection!r}")

    # ------------------------------------------------------------------ stages
    def prepare(self, images, what: str = "frames", size: Optional[tuple] = None) -> torch.Tensor:
        """Validate (T,3,H,W) in [0,1]; resize: short side to the backbone resolution, aspect kept,
        sides multiples of 8 (``size`` (H, W): squashed to exactly that)."""
        return check_images(images, self.cfg.resolution, self.device, what, size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(T,3,H,W) [0,1] -> (T,4,H/8,W/8) posterior mean x scaling factor."""
        out = [self.vae.encode((images[s] * 2 - 1).to(self.dtype)).latent_dist.mean for s in self._chunks(len(images))]
        return torch.cat(out).float() * self.scale

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """(T,4,h,w) -> (T,3,H,W) in [0,1]; differentiable under grad mode."""
        z0 = z0.to(self.device)
        out = [self.vae.decode((z0[s] / self.scale).to(self.dtype)).sample for s in self._chunks(len(z0))]
        # contiguous: the VAE returns channels_last tensors, the disk cache standard ones; the same
        # layout everywhere keeps downstream convs bit-identical (seeded runs reproduce exactly)
        return ((torch.cat(out).float() + 1) / 2).clamp(0, 1).contiguous()

    @torch.no_grad()
    def invert_latents(self, z: torch.Tensor) -> Inversion:
        """DDIM inversion with the empty prompt, on the sampling timesteps (plus the inversion grid)."""
        traj = {t: [] for t in self.timesteps}
        for s in self._chunks(len(z)):
            emb = self.null_emb.expand(len(z[s]), -1, -1)
            self.state.mode = None
            for t, x in self.sampler.invert(z[s].float(), lambda x, t: self._eps(x, t, emb)).items():
                traj[t].append(x)
        traj = {t: torch.cat(v) for t, v in traj.items()}
        return Inversion(z.float(), traj, traj[self.timesteps[0]])

    def invert(self, frames: torch.Tensor) -> Inversion:
        """frames (T,3,H,W) [0,1] -> Inversion (cached by frame bytes)."""
        x = self.prepare(frames)
        return self._cache(self._cache.key("inv", _hash_tensor(x)), lambda: self.invert_latents(self.encode(x)),
                           Inversion.tensors, Inversion.from_tensors)

    def style_context(self, style: torch.Tensor, size: Optional[tuple] = None) -> StyleContext:
        """style (1,3,Hs,Ws) [0,1] -> prompt/uncond embeddings + the style image's inversion (cached).

        The Q-Former sees the whole style image; the inversion (the style steps' reference, batched
        with the frames' latents) runs on it squashed to the frames' ``size`` (H, W) (default: the
        style image's own size at the backbone resolution)."""
        s = self.prepare(style, "style image")[:1]                             # (1,3,Hs,Ws) whole
        size = tuple(int(v) for v in (size if size is not None else s.shape[-2:]))
        key = self._cache.key("style", _hash_tensor(s), self.cfg.prompt, self.cfg.style_subject, f"{size[0]}x{size[1]}")

        def build():
            ref = self.prepare(s, "style image", size)                         # (1,3,H,W) squashed, whole
            return StyleContext(self.style_embedding(s), self.neg_emb.clone(),
                                self.invert_latents(self.encode(ref)))
        return self._cache(key, build, StyleContext.tensors, StyleContext.from_tensors)

    @torch.no_grad()
    def style_embedding(self, style: torch.Tensor) -> torch.Tensor:
        """(1,3,Hs,Ws) [0,1], the whole style image -> (1,77,D): BLIP-Diffusion prompt with the 16
        style queries spliced in."""
        return style_prompt_embedding(self.tokenizer, self.text_encoder, self.qformer, style, self.cfg.prompt,
                                      self.cfg.style_subject, self.image_mean, self.image_std,
                                      self.ctx_begin_pos, self.dtype)

    def denoise(self, xT: torch.Tensor, inversion: Inversion, style_ctx: Optional[StyleContext],
                inject: bool = True, guidance_scale: Optional[float] = None) -> torch.Tensor:
        """DDIM sampling from x_T (T,4,h,w) with content/style injection -> z0 (T,4,h,w).

        ``style_ctx=None`` samples with the empty prompt (no style; for round trips). Differentiable
        w.r.t. ``xT`` under grad mode (the baseline runs it under no_grad).
        """
        g = self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        cond = style_ctx.cond if style_ctx is not None else self.null_emb
        cfg_on = g > 1.0 and style_ctx is not None
        groups = [style_ctx.uncond, cond] if cfg_on else [cond]
        xT = xT.to(self.device).float()
        out, self.step_log = [], []
        for s in self._chunks(len(xT)):
            targets = torch.cat([e.expand(len(xT[s]), -1, -1) for e in groups])   # (G*n,L,D)

            def eps_fn(x, t, s=s, targets=targets):
                mode, ref = None, None
                if inject and t in self.content_steps:
                    mode, ref = "content", inversion.trajectory[t][s].to(self.device)        # (n,4,h,w)
                elif inject and t in self.style_steps and style_ctx is not None:
                    mode, ref = "style", style_ctx.inversion.trajectory[t].to(self.device)  # (1,4,h,w) shared
                if s.start == 0:
                    self.step_log.append((t, mode))
                self.state.mode, self.state.groups = mode, len(groups)
                self.state.n_ref = 0 if mode is None else len(ref)
                parts = [x] * len(groups) if mode is None else [ref] + [x] * len(groups)
                ref_emb = self.neg_emb if style_ctx is not None else self.null_emb   # DiffuseST: [uncond, uncond, cond]
                emb = targets if mode is None else torch.cat([ref_emb.expand(len(ref), -1, -1), targets])
                try:
                    eps = self._eps(torch.cat(parts), t, emb)[self.state.n_ref:]  # drop the reference rows
                finally:
                    self.state.mode = None
                if cfg_on:
                    e_u, e_c = eps.chunk(2)
                    eps = e_u + g * (e_c - e_u)
                return eps
            out.append(self.sampler.sample(xT[s], eps_fn))
        return torch.cat(out)

    # ------------------------------------------------------------------ bookkeeping
    def _eps(self, x: torch.Tensor, t: int, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype)).sample.float()

    def _chunks(self, n: int):
        b = max(1, self.cfg.batch_size)
        return [slice(i, min(n, i + b)) for i in range(0, n, b)]

    def _place(self, module):
        module = module.to(self.device)
        if next(module.parameters()).dtype != self.dtype:   # cast only when needed (diffusers warns)
            module = module.to(self.dtype)
        return module.eval().requires_grad_(False)

    def _count(self, module, args):
        self.unet_calls += 1
        self.unet_images += int(args[0].shape[0]) if args else 0


__all__ = ["DiffuseST", "DiffuseSTOutput", "StyleContext"]
