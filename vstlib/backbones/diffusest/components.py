"""What a DiffuseST pipeline is built from: BLIP-Diffusion's modules plus SD's DDIM schedule.

Both sources fill the same :class:`Components`: the tiny random twin (``tiny.py``) and the real
``Salesforce/blipdiffusion`` weights (``hub.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# SD1.x's DDIM schedule (BLIP-Diffusion's UNet is SD1.5's)
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                    steps_offset=1)
# BLIP-Diffusion's own scheduler (the snapshot's scheduler/; DiffuseST samples with it)
PNDM_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      set_alpha_to_one=False, skip_prk_steps=True)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # BLIP-2 image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Components:
    tokenizer: object                     # CLIPTokenizer
    text_encoder: torch.nn.Module         # ContextCLIPTextModel
    qformer: torch.nn.Module              # Blip2QFormerModel
    unet: torch.nn.Module                 # UNet2DConditionModel
    vae: torch.nn.Module                  # AutoencoderKL
    scheduler: object                     # the source's scheduler (snapshot: PNDMScheduler); see make_scheduler
    image_mean: tuple = CLIP_MEAN
    image_std: tuple = CLIP_STD
    ctx_begin_pos: int = 2                # where the style queries are spliced into the prompt


def make_scheduler(sampler: str, source=None):
    """The diffusers scheduler for ``backbone.sampler``: "ddim" = SD's DDIM config; "pndm" = the
    source's PNDMScheduler config (the snapshot's), else BLIP-Diffusion's."""
    from diffusers import DDIMScheduler, PNDMScheduler

    if sampler == "ddim":
        return DDIMScheduler(**SD_SCHEDULER)
    if sampler == "pndm":
        if isinstance(source, PNDMScheduler):
            return PNDMScheduler.from_config(source.config)
        return PNDMScheduler(**PNDM_SCHEDULER)
    raise ValueError(f"backbone.sampler must be 'ddim' or 'pndm', got {sampler!r}")


def use_sdpa(text_encoder, qformer) -> None:
    """Give transformers modules an attention backend (built outside its loaders they have none:
    eager attention plus warnings)."""
    for c in (text_encoder.config, qformer.config.qformer_config, qformer.config.vision_config):
        if getattr(c, "_attn_implementation", None) is None:
            c._attn_implementation = "sdpa"


__all__ = ["Components", "make_scheduler", "PNDM_SCHEDULER", "SD_SCHEDULER", "CLIP_MEAN", "CLIP_STD", "use_sdpa"]
