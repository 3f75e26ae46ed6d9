"""The real BLIP-Diffusion components from the Hugging Face hub (cache first, one clear error offline)."""
from __future__ import annotations

import os

import torch

from vstlib.utils import MissingWeightsError, weights_guard

from .components import CLIP_MEAN, CLIP_STD, SD_SCHEDULER, Components, use_sdpa

PAPER_MODEL = "Salesforce/blipdiffusion"
QFORMER_TOKENIZER = "bert-base-uncased"    # loaded by Blip2QFormerModel.__init__


def hf_cache_dir() -> str:
    """The hub cache folder (read at call time: huggingface_hub freezes HF_HOME when first imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(home, "hub")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def blipdiffusion_components(model_id: str = PAPER_MODEL, dtype=torch.float16) -> Components:
    """The real BLIP-Diffusion components; one MissingWeightsError when they are not cached offline."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    cache = hf_cache_dir()
    fix = (f"with network, pre-download once: `hf download {model_id} --cache-dir {cache}` and "
           f"`hf download {QFORMER_TOKENIZER} vocab.txt tokenizer_config.json config.json --cache-dir {cache}` "
           f"(or run `vst download-weights`); or use the smoke profile")
    try:  # local cache first: no network, no retries
        local = snapshot_download(model_id, cache_dir=cache, local_files_only=True)
        bert_ok = isinstance(try_to_load_from_cache(QFORMER_TOKENIZER, "vocab.txt", cache_dir=cache), str)
    except Exception:
        local, bert_ok = None, False
    if (local is None or not bert_ok) and _offline():
        raise MissingWeightsError(f"BLIP-Diffusion weights {model_id!r} (and its Q-Former tokenizer "
                                  f"{QFORMER_TOKENIZER!r}) are not cached in {cache} and HF_HUB_OFFLINE is set",
                                  fix=fix)
    from diffusers import DDIMScheduler
    from diffusers.pipelines.deprecated.blip_diffusion import BlipDiffusionPipeline

    with weights_guard(model_id, [model_id], fix=fix):
        if local is None:
            local = snapshot_download(model_id, cache_dir=cache)
        pipe = BlipDiffusionPipeline.from_pretrained(local, torch_dtype=dtype, cache_dir=cache)
    use_sdpa(pipe.text_encoder, pipe.qformer)
    mean = tuple(pipe.config.mean) if getattr(pipe.config, "mean", None) else CLIP_MEAN
    std = tuple(pipe.config.std) if getattr(pipe.config, "std", None) else CLIP_STD
    return Components(pipe.tokenizer, pipe.text_encoder, pipe.qformer, pipe.unet, pipe.vae,
                      DDIMScheduler(**SD_SCHEDULER), mean, std, int(pipe.config.ctx_begin_pos))


__all__ = ["blipdiffusion_components", "hf_cache_dir", "PAPER_MODEL", "QFORMER_TOKENIZER"]
