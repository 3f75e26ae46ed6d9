"""BLIP-Diffusion's text side: the context CLIP text encoder and the BLIP-2 Q-Former, driven directly.

The style image becomes 16 Q-Former query embeddings that are spliced into the prompt
``"a <style_subject> <prompt>"`` (repeated 20x) at ``ctx_begin_pos`` of the CLIP text encoder.

Compatibility note: under transformers 5, diffusers' deprecated ``Blip2QFormerModel.forward`` and
``ContextCLIPTextModel`` call helpers transformers removed (``invert_attention_mask``, a separate
``causal_attention_mask``); :func:`query_embeddings` and :func:`encode_text` drive their submodules
directly (same weights, same maths, explicit causal mask).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

NUM_QUERY_TOKENS = 16                       # BLIP-Diffusion's Q-Former queries


def encode_text(text_encoder, input_ids: torch.Tensor, ctx: Optional[torch.Tensor] = None,
                ctx_begin_pos: int = 2) -> torch.Tensor:
    """ContextCLIPTextModel forward with an explicit causal mask: (B,L) ids [+ (B,Q,D) ctx] -> (B,L+Q,D)."""
    tm = text_encoder.text_model
    pos = [ctx_begin_pos] * input_ids.shape[0]
    h = tm.embeddings(input_ids=input_ids, ctx_embeddings=ctx, ctx_begin_pos=pos)   # (B,L',D)
    n = h.shape[1]
    causal = torch.full((n, n), torch.finfo(h.dtype).min, device=h.device, dtype=h.dtype).triu(1)
    h = tm.encoder(inputs_embeds=h, attention_mask=causal[None, None].expand(h.shape[0], 1, n, n))
    h = h[0] if isinstance(h, (tuple, list)) else h.last_hidden_state
    return tm.final_layer_norm(h)


def query_embeddings(qformer, pixels: torch.Tensor, text: list[str]) -> torch.Tensor:
    """BLIP-2 Q-Former: image (B,3,S,S) normalised + subject words -> (B,16,D) query embeddings."""
    tok = qformer.tokenizer(text, return_tensors="pt", padding=True)
    ids, mask = tok.input_ids.to(pixels.device), tok.attention_mask.to(pixels.device)
    queries = qformer.query_tokens                                    # (1,Q,D)
    nq = queries.shape[1]
    h = qformer.embeddings(input_ids=ids, query_embeds=queries)      # (B,Q+L,D): queries then text
    img = qformer.visual_encoder(pixels, return_dict=True).last_hidden_state           # (B,P+1,Dv)
    keep = torch.cat([torch.ones(ids.shape[0], nq, dtype=mask.dtype, device=mask.device), mask], 1)
    add_mask = (1.0 - keep[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min  # (B,1,1,Q+L)
    for layer in qformer.encoder.layer:
        a = layer.attention(h, attention_mask=add_mask)             # queries and text attend jointly
        q, t = a[:, :nq], a[:, nq:]
        if layer.has_cross_attention:                                 # only queries look at the image
            q = layer.crossattention(q, encoder_hidden_states=img)
        q = layer.output_query(layer.intermediate_query(q), q)
        t = layer.output(layer.intermediate(t), t)
        h = torch.cat([q, t], 1)
    return qformer.proj_layer(h[:, :nq])


def build_prompt(prompt: str, subject: str, reps: int = 20) -> str:
    """BLIP-Diffusion's prompt amplification: ``"a <subject> <prompt>"`` repeated ``reps`` times."""
    return ", ".join([f"a {subject} {prompt.strip()}"] * reps)


def empty_prompt_embedding(tokenizer, text_encoder, device, text: str = "") -> torch.Tensor:
    """(1,77,D): a plain prompt, by default the empty one (inversion); DiffuseST's negative prompt
    for the unconditional guidance branch and the reference branch."""
    ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    return encode_text(text_encoder, ids).float()


def style_prompt_embedding(tokenizer, text_encoder, qformer, style: torch.Tensor, prompt: str, subject: str,
                           image_mean: tuple, image_std: tuple, ctx_begin_pos: int, dtype) -> torch.Tensor:
    """style (1,3,H,W) [0,1] -> (1,77,D): BLIP-Diffusion's prompt with the 16 style queries spliced in.

    The Q-Former gets the WHOLE image, squashed to its square input (224 x 224 for BLIP-2), bicubic
    with antialiasing, then normalised: what the snapshot's BlipImageProcessor does (PIL bicubic
    resize, no crop); a centre crop would show it only the middle of the painting.
    """
    vis = qformer.config.vision_config.image_size
    px = F.interpolate(style, size=(vis, vis), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mean = torch.tensor(image_mean, device=style.device).view(1, 3, 1, 1)
    std = torch.tensor(image_std, device=style.device).view(1, 3, 1, 1)
    queries = query_embeddings(qformer, ((px - mean) / std).to(dtype), [subject])       # (1,16,D)
    max_len = text_encoder.text_model.config.max_position_embeddings - queries.shape[1]
    ids = tokenizer([build_prompt(prompt, subject)], padding="max_length", truncation=True, max_length=max_len,
                    return_tensors="pt").input_ids.to(style.device)
    return encode_text(text_encoder, ids, queries, ctx_begin_pos).float()


__all__ = ["encode_text", "query_embeddings", "build_prompt", "empty_prompt_embedding",
           "style_prompt_embedding", "NUM_QUERY_TOKENS"]
