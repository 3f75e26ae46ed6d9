"""The tiny offline twin: randomly initialised BLIP-Diffusion components with SD1.5's block structure.

Everything is built from configs written out here (no download): a UNet and VAE with SD1.5's
block types at tiny widths, a one-layer context CLIP text encoder and Q-Former, and CLIP/BERT
tokenizers whose vocabularies are written at run time. The smoke profile and the tests run on it.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import torch

from vstlib.backbones.diffusest.blip import NUM_QUERY_TOKENS
from vstlib.backbones.diffusest.components import SD_SCHEDULER, Components, use_sdpa
from vstlib.files import atomic_write_text

# SD1.5's UNet and VAE, written out so that the tiny twin and the FLOP benchmark need no download
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1, act_fn="silu",
    norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512,
    scaling_factor=0.18215)
# the tiny twin: same block types (up_blocks 1-3 have attentions, up_blocks 1-2 resnets), tiny widths
TINY_UNET = {**SD15_UNET, "block_out_channels": (16, 16, 32, 32), "norm_num_groups": 8,
             "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 2}
TINY_VAE = {**SD15_VAE, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 8, "layers_per_block": 1}
TINY_TEXT_DIM = 32
# Two init gains make the random twin behave like SD where the pipeline relies on it:
# - SD's 0.18215 gives unit-variance latents; a random tiny VAE's posterior mean is ~20x smaller,
#   so its quant_conv is scaled up (and post_quant_conv down) to give SD-like latents;
# - a random full-gain UNet is no denoiser: its eps changes ~1.4x as fast as its input, so the DDIM
#   ODE it defines is ill-conditioned and inversion drifts far from the frame. A smaller output
#   layer keeps the ODE smooth like a trained model's (x_T round trips to ~2% on 50 steps) while
#   guidance and injection still move z0 by ~80% of its norm.
TINY_LATENT_GAIN = 20.0
TINY_EPS_GAIN = 0.1


def _write_tiny_tokenizers(folder: Path) -> tuple[Path, Path]:
    """A byte-level CLIP BPE vocab (no merges beyond a few words) and a BERT word-piece vocab."""
    clip_dir, bert_dir = folder / "clip", folder / "bert"
    # GPT-2/CLIP byte -> printable unicode table: printable bytes map to themselves, others above 255
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = [chr(b) for b in keep] + [chr(256 + i) for i in range(256 - len(keep))]
    merges = ["s t", "st y", "sty l", "styl e</w>"]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    atomic_write_text(clip_dir / "vocab.json", json.dumps(vocab))
    atomic_write_text(clip_dir / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "style", "a", "painting", "photo"]
    atomic_write_text(bert_dir / "vocab.txt", "\n".join(words + list("abcdefghijklmnopqrstuvwxyz")) + "\n")
    return clip_dir, bert_dir


def tiny_components(seed: int = 0, workdir: Optional[Path] = None, unet=None, vae=None,
                    text_dim: int = TINY_TEXT_DIM) -> Components:
    """Randomly initialised BLIP-Diffusion components (SD1.5 block structure, tiny widths).

    ``workdir`` keeps the tokenizer vocabularies (a temporary folder, removed afterwards, when
    None: the tokenizers read them once). ``unet``/``vae`` replace the tiny ones (the benchmark
    plugs in full-size SD1.5 modules; then ``text_dim`` must equal the UNet's ``cross_attention_dim``).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="vst-tok-") as tmp:
            return tiny_components(seed, Path(tmp), unet, vae, text_dim)
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_blip2 import (
        Blip2QFormerModel,
    )
    from diffusers.pipelines.deprecated.blip_diffusion.modeling_ctx_clip import (
        ContextCLIPTextModel,
    )
    from transformers import CLIPTextConfig, CLIPTokenizer
    from transformers.models.blip_2.configuration_blip_2 import Blip2Config

    clip_dir, bert_dir = _write_tiny_tokenizers(Path(workdir))
    tokenizer = CLIPTokenizer(str(clip_dir / "vocab.json"), str(clip_dir / "merges.txt"), model_max_length=77)
    with torch.random.fork_rng(devices=[]):  # seeded build, global RNG untouched
        torch.manual_seed(seed)
        text_cfg = CLIPTextConfig(vocab_size=1000, hidden_size=text_dim, intermediate_size=2 * text_dim,
                                  num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                                  projection_dim=text_dim, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        text_encoder = ContextCLIPTextModel(text_cfg)
        q_cfg = Blip2Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                               image_size=32, patch_size=8, hidden_act="quick_gelu"),
            qformer_config=dict(vocab_size=64, hidden_size=text_dim, num_hidden_layers=1, num_attention_heads=4,
                                intermediate_size=2 * text_dim, max_position_embeddings=64,
                                cross_attention_frequency=1, encoder_hidden_size=32),
            num_query_tokens=NUM_QUERY_TOKENS, tokenizer=str(bert_dir))
        qformer = Blip2QFormerModel(q_cfg)
        if unet is None:
            unet = UNet2DConditionModel(**TINY_UNET)
            with torch.no_grad():  # see TINY_EPS_GAIN
                unet.conv_out.weight.mul_(TINY_EPS_GAIN)
                unet.conv_out.bias.mul_(TINY_EPS_GAIN)
        if vae is None:
            vae = AutoencoderKL(**TINY_VAE)
            with torch.no_grad():  # see TINY_LATENT_GAIN
                vae.quant_conv.weight.mul_(TINY_LATENT_GAIN)
                vae.quant_conv.bias.mul_(TINY_LATENT_GAIN)
                vae.post_quant_conv.weight.div_(TINY_LATENT_GAIN)
    use_sdpa(text_encoder, qformer)
    return Components(tokenizer, text_encoder, qformer, unet, vae, DDIMScheduler(**SD_SCHEDULER))


__all__ = ["tiny_components", "SD15_UNET", "SD15_VAE", "TINY_UNET", "TINY_VAE", "TINY_TEXT_DIM",
           "TINY_LATENT_GAIN", "TINY_EPS_GAIN"]
