"""The real BLIP-Diffusion components from the Hugging Face hub cache, loaded component by component.

Why not ``BlipDiffusionPipeline.from_pretrained``: the snapshot's ``model_index.json`` was written
by diffusers 0.21.0.dev0, when the pipeline lived at ``diffusers.pipelines.blip_diffusion``; it
names the library of three components ``"blip_diffusion"``. The pipeline has since moved to
``pipelines/deprecated/``, and diffusers' pipeline loader (0.42) stops with ``ValueError:
blip_diffusion is not one of the libraries Diffusers can load components from`` (huggingface/
diffusers#11100). Each component folder is a plain model folder, so each one loads with its own
class; the pipeline's own config entries (``mean``, ``std``, ``ctx_begin_pos``) are read from
``model_index.json``. The Q-Former's ``__init__`` loads a BERT tokenizer by name
(``bert-base-uncased``); it is resolved from the same cache and handed over as a local folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from vstlib.backbones.diffusest.components import Components, use_sdpa
from vstlib.errors import MissingWeightsError, VstError

PAPER_MODEL = "Salesforce/blipdiffusion"
QFORMER_TOKENIZER = "bert-base-uncased"    # loaded by Blip2QFormerModel.__init__
COMPONENTS = ("tokenizer", "text_encoder", "qformer", "unet", "vae", "scheduler")


def hf_cache_dir() -> str:
    """The hub cache folder (read at call time: huggingface_hub freezes HF_HOME when first imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(home, "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _fix(model_id: str, cache: str) -> str:
    return (f"download once with network: `hf download {model_id} --cache-dir {cache}` and "
            f"`hf download {QFORMER_TOKENIZER} vocab.txt tokenizer_config.json config.json --cache-dir {cache}` "
            f"(or `vst download-weights --profile paper`), then copy {cache} to this machine")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def resolve_snapshot(model_id: str = PAPER_MODEL, cache_dir: Optional[str] = None) -> Path:
    """A local snapshot folder: ``model_id`` itself when it is a folder, else the cached snapshot
    (never the network)."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import snapshot_download

    cache = cache_dir or hf_cache_dir()
    try:
        return Path(snapshot_download(model_id, cache_dir=cache, local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError, ...: all mean "not in the cache"
        raise MissingWeightsError(f"{model_id} is not in the Hugging Face cache {cache} ({type(err).__name__})",
                                  fix=_fix(model_id, cache)) from None


def read_model_index(root: Path) -> dict:
    path = Path(root) / "model_index.json"
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingWeightsError("model_index.json missing from the BLIP-Diffusion snapshot", path,
                                  "re-download the snapshot (`hf download Salesforce/blipdiffusion`)") from None
    except (OSError, ValueError) as err:
        raise VstError(f"model_index.json is unreadable ({_one_line(err)})", path,
                       "re-download the snapshot (`hf download Salesforce/blipdiffusion`)") from None
    missing = [c for c in COMPONENTS if c not in index]
    if missing:
        raise VstError(f"model_index.json names no {', '.join(missing)}: not a BLIP-Diffusion snapshot", path,
                       "point backbone.model_id at Salesforce/blipdiffusion")
    return index


def _bert_folder(cache: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(QFORMER_TOKENIZER, cache_dir=cache, local_files_only=True,
                                 allow_patterns=["vocab.txt", "tokenizer_config.json", "config.json"])
    except Exception as err:
        raise MissingWeightsError(f"the Q-Former tokenizer {QFORMER_TOKENIZER!r} is not in the Hugging Face "
                                  f"cache {cache} ({type(err).__name__})", fix=_fix(PAPER_MODEL, cache)) from None


# files each component folder must hold (weights in safetensors or the older .bin)
_REQUIRED = {"tokenizer": (("vocab.json",), ("merges.txt",)),
             "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
             "qformer": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
             "unet": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
             "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
             "scheduler": (("scheduler_config.json",),)}


def missing_files(root: Path) -> list[str]:
    """Files a BLIP-Diffusion snapshot folder lacks (one of each alternative group), e.g.
    ``["unet/diffusion_pytorch_model.safetensors"]``; [] when complete."""
    root = Path(root)
    out = [] if (root / "model_index.json").is_file() else ["model_index.json"]
    for comp, groups in _REQUIRED.items():
        for alts in groups:
            if not any((root / comp / f).is_file() and (root / comp / f).stat().st_size > 0 for f in alts):
                out.append(f"{comp}/{alts[0]}")
    return out


def load_blipdiffusion(model_id: str = PAPER_MODEL, dtype: torch.dtype = torch.float16,
                       cache_dir: Optional[str] = None) -> Components:
    """Every BLIP-Diffusion component from its own subfolder with its own class.

    Offline: a snapshot that is not cached is one :class:`MissingWeightsError`; a component
    that fails to load (missing or damaged file) is one :class:`VstError` naming the folder.
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_blip2 import (
        Blip2QFormerModel,
    )
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import (
        ContextCLIPTextModel,
    )
    from transformers import CLIPTokenizer
    from transformers.models.blip_2.configuration_blip_2 import Blip2Config

    cache = cache_dir or hf_cache_dir()
    root = resolve_snapshot(model_id, cache)
    index = read_model_index(root)
    bert = _bert_folder(cache)

    def qformer(folder):
        cfg = Blip2Config.from_pretrained(folder)
        cfg.tokenizer = bert                  # the local BERT vocabulary, not a hub lookup
        return Blip2QFormerModel.from_pretrained(folder, config=cfg, torch_dtype=dtype)

    def scheduler(folder):
        name = index["scheduler"][1]
        cls = getattr(diffusers, name, None)
        if cls is None:
            raise ValueError(f"model_index.json names scheduler {name!r}, which diffusers does not have")
        return cls.from_pretrained(folder)

    loaders = {
        "tokenizer": lambda f: CLIPTokenizer.from_pretrained(f),
        "text_encoder": lambda f: ContextCLIPTextModel.from_pretrained(f, torch_dtype=dtype),
        "qformer": qformer,
        "unet": lambda f: UNet2DConditionModel.from_pretrained(f, torch_dtype=dtype),
        "vae": lambda f: AutoencoderKL.from_pretrained(f, torch_dtype=dtype),
        "scheduler": scheduler,
    }
    comps = {}
    for name, load in loaders.items():
        folder = root / name
        if not folder.is_dir():
            raise MissingWeightsError(f"component folder {name}/ missing from the BLIP-Diffusion snapshot",
                                      folder, _fix(PAPER_MODEL, cache))
        try:
            comps[name] = load(str(folder))
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            raise VstError(f"BLIP-Diffusion component {name} failed to load ({_one_line(err)})", folder,
                           f"the snapshot is incomplete or damaged: delete {root.parent.parent} and "
                           f"re-download ({_fix(PAPER_MODEL, cache)})") from None
    for name in ("text_encoder", "qformer", "unet", "vae"):
        comps[name].eval().requires_grad_(False)
    use_sdpa(comps["text_encoder"], comps["qformer"])
    mean = tuple(float(x) for x in index.get("mean") or ())
    std = tuple(float(x) for x in index.get("std") or ())
    if len(mean) != 3 or len(std) != 3:
        raise VstError("model_index.json has no 3-channel mean/std", root / "model_index.json",
                       "re-download the snapshot (`hf download Salesforce/blipdiffusion`)")
    return Components(**comps, image_mean=mean, image_std=std, ctx_begin_pos=int(index.get("ctx_begin_pos", 2)))



blipdiffusion_components = load_blipdiffusion   # the name the pipeline imports


__all__ = ["load_blipdiffusion", "blipdiffusion_components", "resolve_snapshot", "read_model_index", "hf_cache_dir",
           "offline", "missing_files", "PAPER_MODEL", "QFORMER_TOKENIZER", "COMPONENTS"]
