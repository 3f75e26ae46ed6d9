"""Stand-in weights: random weights with the real architectures, in the exact cache layouts
the paper profile reads, so the whole paper path can be rehearsed without any download.

``write_standin_weights(DIR)`` writes::

    DIR/STAND-IN-WEIGHTS.txt                      marker: nothing made from these is a result
    DIR/huggingface/hub/                          = $HF_HOME/hub (HF_HUB_CACHE)
        models--Salesforce--blipdiffusion/        snapshot as diffusers 0.21.0.dev0 saved it:
            refs/main, snapshots/<rev>/model_index.json, tokenizer/, text_encoder/, qformer/,
            unet/, vae/, scheduler/, image_processor/
        models--bert-base-uncased/                the Q-Former's tokenizer (Blip2QFormerModel
                                                  loads it by name in __init__)
        models--timm--vit_base_patch32_clip_224.openai/   open_clip's ViT-B-32 ``openai`` tag
    DIR/torch/hub/checkpoints/                    = $TORCH_HOME/hub/checkpoints
        vgg19-dcbb9e9d.pth, alexnet-owt-7be5be79.pth, raft_large_C_T_SKHT_V2-ff5fadd5.pth

Point the environment at it with ``HF_HOME=DIR/huggingface TORCH_HOME=DIR/torch HF_HUB_OFFLINE=1``
(:func:`standin_env`).

``scale="tiny"`` writes the BLIP-Diffusion snapshot with tiny widths (same block types, same
files, same model_index.json) for fast tests. torchvision and open_clip build their networks by
name, so VGG19, AlexNet, RAFT-large and ViT-B-32 are always full size; ``parts`` leaves them out.

Tokenizers are made offline: the CLIP BPE vocabulary and the BERT word-piece vocabulary are
small valid stand-ins (a few hundred tokens), not the real 49,408 / 30,522 token files. Token ids
therefore differ from the real tokenizers; shapes, special tokens and code paths do not.

Config values of the real snapshot (from diffusers' ``scripts/convert_blipdiffusion_to_diffusers.py``,
which wrote it, and the pipeline's ``__init__``): the UNet, VAE and text encoder are
Stable Diffusion 1.5's (``runwayml/stable-diffusion-v1-5``); the Q-Former is
``Blip2Config(vision_config={hidden 1024, 23 layers, 16 heads, image 224, patch 14, mlp 4096,
quick_gelu}, qformer_config={cross_attention_frequency 1, encoder_hidden_size 1024,
vocab_size 30523}, num_query_tokens=16)``; the scheduler is
``PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
set_alpha_to_one=False, skip_prk_steps=True)`` (steps_offset left at 0); the image processor is
``BlipImageProcessor()`` (224x224, bicubic, centre crop, CLIP mean/std); ``ctx_begin_pos=2`` and
CLIP's mean/std are pipeline config entries of ``model_index.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import torch

from vstlib.backbones.diffusest.tiny import SD15_UNET, SD15_VAE, TINY_UNET, TINY_VAE
from vstlib.errors import InputError
from vstlib.files import atomic_path, atomic_write_json, atomic_write_text
from vstlib.hub import MARKER

BLIP_REPO = "Salesforce/blipdiffusion"
BERT_REPO = "bert-base-uncased"
CLIP_REPO = "timm/vit_base_patch32_clip_224.openai"
PARTS = ("blipdiffusion", "bert", "torchvision", "clip")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# model_index.json as diffusers 0.21.0.dev0 wrote it for the pipeline (then at
# diffusers.pipelines.blip_diffusion, hence the library name "blip_diffusion")
MODEL_INDEX = {
    "_class_name": "BlipDiffusionPipeline",
    "_diffusers_version": "0.21.0.dev0",
    "ctx_begin_pos": 2,
    "image_processor": ["blip_diffusion", "BlipImageProcessor"],
    "mean": CLIP_MEAN,
    "qformer": ["blip_diffusion", "Blip2QFormerModel"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "std": CLIP_STD,
    "text_encoder": ["blip_diffusion", "ContextCLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
PNDM_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   set_alpha_to_one=False, skip_prk_steps=True)
# SD-1.5's text_encoder/config.json (CLIP ViT-L/14 text tower)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
                 num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2,
                 pad_token_id=1)
# the Q-Former as the conversion script builds it (other fields: transformers' defaults,
# i.e. a BERT-base Q-Former: hidden 768, 12 layers, 12 heads, mlp 3072)
BLIP2_QFORMER = dict(
    vision_config=dict(hidden_size=1024, num_hidden_layers=23, num_attention_heads=16, image_size=224,
                       patch_size=14, intermediate_size=4096, hidden_act="quick_gelu"),
    qformer_config=dict(cross_attention_frequency=1, encoder_hidden_size=1024, vocab_size=30523),
    num_query_tokens=16)
TINY_TEXT = dict(SD15_TEXT, hidden_size=32, intermediate_size=64, projection_dim=32,
                 num_hidden_layers=1, num_attention_heads=4)
TINY_QFORMER = dict(
    vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, image_size=224,
                       patch_size=32, intermediate_size=64, hidden_act="quick_gelu"),
    qformer_config=dict(cross_attention_frequency=1, encoder_hidden_size=32, vocab_size=30523,
                        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64),
    num_query_tokens=16)


def revision(repo: str, scale: str) -> str:
    """A fixed 40-hex snapshot revision per repo and scale (reruns overwrite the same folder)."""
    return hashlib.sha1(f"vstlib stand-in {repo} {scale}".encode()).hexdigest()


def hub_cache(root: os.PathLike) -> Path:
    return Path(root) / "huggingface" / "hub"


def torch_checkpoints(root: os.PathLike) -> Path:
    return Path(root) / "torch" / "hub" / "checkpoints"


def standin_env(root: os.PathLike) -> dict:
    """Environment that makes every loader read the stand-in DIR (and never the network)."""
    root = Path(root).resolve()
    return {"HF_HOME": str(root / "huggingface"), "HF_HUB_CACHE": str(hub_cache(root)),
            "TORCH_HOME": str(root / "torch"), "HF_HUB_OFFLINE": "1"}


# --------------------------------------------------------------------------- HF cache snapshots
class _Snapshot:
    """Write a repo snapshot into a temporary folder; ``commit()`` renames it into place and
    writes refs/main last, so an interrupted run never leaves a half snapshot that loads."""

    def __init__(self, cache: Path, repo: str, scale: str):
        self.repo_dir = cache / ("models--" + repo.replace("/", "--"))
        self.rev = revision(repo, scale)
        self.final = self.repo_dir / "snapshots" / self.rev
        self.path = self.repo_dir / "snapshots" / f".{self.rev}.tmp"
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)

    def commit(self) -> Path:
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.path, self.final)
        atomic_write_text(self.repo_dir / "refs" / "main", self.rev)
        return self.final


def _bpe_files(folder: Path) -> tuple[Path, Path]:
    """A small valid byte-level BPE vocabulary (CLIP's format): every byte symbol alone and with
    ``</w>``, a few merges, and the two special tokens."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = [chr(b) for b in keep] + [chr(256 + i) for i in range(256 - len(keep))]  # GPT-2 byte map
    merges = ["t h", "th e</w>", "s t", "st y", "sty l", "styl e</w>"]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def _bert_vocab() -> list[str]:
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += ["a", "the", "style", "painting", "photo", "dog", "cat"]
    words += list("abcdefghijklmnopqrstuvwxyz0123456789") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    return words


def _write_bert(cache: Path, scale: str) -> Path:
    snap = _Snapshot(cache, BERT_REPO, scale)
    (snap.path / "vocab.txt").write_text("\n".join(_bert_vocab()) + "\n")
    (snap.path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (snap.path / "config.json").write_text(json.dumps(
        {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": len(_bert_vocab()),
         "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
         "intermediate_size": 3072, "max_position_embeddings": 512}))
    return snap.commit()


@contextmanager
def _seeded(seed: int):
    """Seeded random init that leaves the caller's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _write_blipdiffusion(cache: Path, scale: str, dtype: torch.dtype, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.blip_diffusion.blip_image_processing import (
        BlipImageProcessor,
    )
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_blip2 import (
        Blip2QFormerModel,
    )
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import (
        ContextCLIPTextModel,
    )
    from transformers import CLIPTextConfig, CLIPTokenizer
    from transformers.models.blip_2.configuration_blip_2 import Blip2Config

    full = scale == "full"
    snap = _Snapshot(cache, BLIP_REPO, scale)
    root = snap.path
    # the tokenizer folder as transformers 4 saved SD-1.5's (slow-tokenizer files, no tokenizer.json)
    tok_dir = root / "tokenizer"
    _bpe_files(tok_dir)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (tok_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(
        {**special, "add_prefix_space": False, "do_lower_case": True, "errors": "replace",
         "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}, indent=2))
    CLIPTokenizer.from_pretrained(str(tok_dir))         # fail here, not at load time, if invalid
    # build the Q-Former with a local BERT vocab (its __init__ would otherwise look the hub up);
    # the saved config keeps no tokenizer path, like the real one
    bert = root / ".bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(_bert_vocab()) + "\n")
    with _seeded(seed):
        modules = {
            "text_encoder": ContextCLIPTextModel(CLIPTextConfig(**(SD15_TEXT if full else TINY_TEXT))),
            "qformer": Blip2QFormerModel(Blip2Config(**(BLIP2_QFORMER if full else TINY_QFORMER),
                                                     tokenizer=str(bert))),
            "unet": UNet2DConditionModel(**(SD15_UNET if full else TINY_UNET)),
            "vae": AutoencoderKL(**(SD15_VAE if full else TINY_VAE)),
        }
    modules["qformer"].config.tokenizer = None
    for name, m in modules.items():
        if dtype != torch.float32:
            m = m.to(dtype)
        m.save_pretrained(str(root / name), safe_serialization=True)
        del m
    shutil.rmtree(bert)
    PNDMScheduler(**PNDM_CONFIG).save_config(str(root / "scheduler"))
    BlipImageProcessor(image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(str(root / "image_processor"))
    (root / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2, sort_keys=True) + "\n")
    return snap.commit()


def _write_clip(cache: Path, dtype: torch.dtype, seed: int = 0) -> Path:
    """open_clip ViT-B-32 (QuickGELU, as OpenAI trained it) where open_clip looks the ``openai``
    tag up: hf_hub ``timm/vit_base_patch32_clip_224.openai``, file ``open_clip_model.safetensors``."""
    import open_clip
    from safetensors.torch import save_file

    snap = _Snapshot(cache, CLIP_REPO, "full")
    with _seeded(seed):
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    sd = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(snap.path / "open_clip_model.safetensors"))
    (snap.path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": open_clip.get_model_config("ViT-B-32-quickgelu"),
         "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}}, indent=2))
    return snap.commit()


def _write_torchvision(folder: Path, seed: int = 0) -> list[Path]:
    """torch.save'd state dicts under torchvision's own file names (what get_state_dict reads)."""
    import torchvision
    from torchvision.models import optical_flow

    out = []
    builders = [(torchvision.models.VGG19_Weights.IMAGENET1K_V1, torchvision.models.vgg19),
                (torchvision.models.AlexNet_Weights.IMAGENET1K_V1, torchvision.models.alexnet),
                (optical_flow.Raft_Large_Weights.C_T_SKHT_V2, optical_flow.raft_large)]
    for weights, build in builders:
        with _seeded(seed):
            sd = build(weights=None).state_dict()
        path = folder / Path(weights.url).name
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
        out.append(path)
    return out


def write_standin_weights(root: os.PathLike, scale: str = "full", parts: Iterable[str] = PARTS,
                          dtype: str = "float32", seed: int = 0) -> dict:
    """Write stand-in weights under ``root``; returns {part: path}. See the module docstring.

    ``dtype``: storage dtype of the safetensors weights ("float32" like the real files, or
    "float16" to halve the disk use); loaders cast to the dtype they ask for.
    """
    if scale not in ("full", "tiny"):
        raise InputError(f"stand-in scale must be 'full' or 'tiny', got {scale!r}")
    parts = tuple(parts)
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise InputError(f"unknown stand-in parts {bad}; choose from {list(PARTS)}")
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise InputError("folder exists, is not empty and is not a stand-in folder", root,
                         "name an empty or new folder (stand-in weights must never mix with real ones)")
    root.mkdir(parents=True, exist_ok=True)
    # the marker first: even a partial folder says what it is
    atomic_write_text(root / MARKER, (
        "STAND-IN WEIGHTS: random weights with the real architectures, in the real cache layouts.\n"
        "Written by `vst stand-in-weights` (vstlib.tools.standin) for rehearsals without downloads.\n"
        "Nothing computed from them is a result.\n"
        f"scale: {scale}\nparts: {', '.join(parts)}\ndtype: {dtype}\nseed: {seed}\n"
        f"use: {' '.join(f'{k}={v}' for k, v in standin_env(root).items())}\n"))
    tdtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    cache = hub_cache(root)
    out = {}
    if "bert" in parts:
        out["bert"] = _write_bert(cache, scale)
    if "blipdiffusion" in parts:
        out["blipdiffusion"] = _write_blipdiffusion(cache, scale, tdtype, seed)
    if "clip" in parts:
        out["clip"] = _write_clip(cache, tdtype, seed)
    if "torchvision" in parts:
        out["torchvision"] = _write_torchvision(torch_checkpoints(root), seed)
    atomic_write_json(root / "stand-in.json", {"scale": scale, "parts": list(parts), "dtype": dtype,
                                                "seed": seed, "written": {k: str(v) for k, v in out.items()}})
    return out


__all__ = ["write_standin_weights", "standin_env", "hub_cache", "torch_checkpoints",
           "MODEL_INDEX", "PNDM_CONFIG", "SD15_TEXT", "BLIP2_QFORMER", "PARTS"]
