"""DiffuseST's feature injection inside the UNet: self-attention processors and resnet hooks.

On *content* steps the reference (the frame's inverted latent at that timestep) lends its
self-attention query+key (``attn1`` of the layers in :data:`INJECTION_LAYERS`) and the ``conv2`` features of the up_blocks 1-2
resnets to the targets; on *style* steps the style image's reference lends its self-attention
key+value. :func:`injection_schedule` says which sampling steps are which; the pipeline sets
:class:`InjectionState` before each UNet call.

Content/style schedule. ``alpha`` is the share of style steps: by default (``original_schedule=False``)
content injection runs on timesteps ``t >= 1000 * alpha`` and style injection on ``t < 1000 * alpha``.
The authors' code builds its content-step set on the 1000-step training schedule while sampling on
50 steps, so with their default ``alpha = 0.1`` *every* sampling step is a content step and the style
branch never runs; ``original_schedule=True`` reproduces that (all steps content, zero style steps).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def injection_schedule(timesteps: list, alpha: float, original_schedule: bool = False) -> tuple[set, set]:
    """(content steps, style steps) among the sampling ``timesteps`` (see the module docstring)."""
    if original_schedule:               # authors' behaviour: every sampling step is a content step
        return set(timesteps), set()
    cut = 1000 * alpha
    return {t for t in timesteps if t >= cut}, {t for t in timesteps if t < cut}


class InjectionState:
    """Shared by the attention processors and resnet hooks: what the current UNet batch holds.

    Batch layout: ``[reference (n_ref), target group 0 (n), target group 1 (n)...]``; groups are
    (uncond, cond) with guidance, (cond,) without. ``mode`` None = plain attention.
    """

    def __init__(self):
        self.mode: Optional[str] = None    # None | "content" | "style"
        self.n_ref = 0
        self.groups = 1
        self.fired = {"content": 0, "style": 0}  # processor/hook calls that injected

    def ref(self, x: torch.Tensor) -> torch.Tensor:
        """The reference rows broadcast over all target rows."""
        r = x[: self.n_ref]
        n = (x.shape[0] - self.n_ref) // self.groups
        r = r.expand(n, *r.shape[1:]) if self.n_ref == 1 else r
        return torch.cat([x[: self.n_ref]] + [r] * self.groups)


class InjectionAttnProcessor:
    """Self-attention (attn1) with DiffuseST feature injection, on ``F.scaled_dot_product_attention``.

    content: targets use the reference's query and key (its attention map over their own values);
    style: targets use the style reference's key and value.
    """

    def __init__(self, state: InjectionState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        st = self.state
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape4 = hidden_states.shape if hidden_states.ndim == 4 else None
        if shape4 is not None:                                       # (B,C,H,W) -> (B,HW,C)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)   # (B,N,C)
        if st.mode == "content":
            q, k = st.ref(q), st.ref(k)
            st.fired["content"] += 1
        elif st.mode == "style":
            k, v = st.ref(k), st.ref(v)
            st.fired["style"] += 1
        B, h = q.shape[0], attn.heads
        q, k, v = (x.view(B, -1, h, x.shape[-1] // h).transpose(1, 2) for x in (q, k, v))  # (B,h,N,d)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[2], B).view(B, h, -1, k.shape[2])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(B, -1, out.shape[1] * out.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if shape4 is not None:
            out = out.transpose(1, 2).reshape(shape4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


# which up-block self-attentions receive injected features: (up_block, attentions index) pairs.
# "diffusest": DiffuseST's (= Plug-and-Play's) set, up_blocks[1].attentions[1,2], up_blocks[2] and
# up_blocks[3].attentions[0,1,2]; "all_up": every attn1 of up_blocks 1-3 (this repository's first build).
INJECTION_LAYERS = {
    "diffusest": {(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)},
    "all_up": None,
}


def injected_attention(name: str, layers: str = "diffusest") -> bool:
    """Whether the attention processor ``name`` (diffusers' dotted name) injects, under ``layers``."""
    if layers not in INJECTION_LAYERS:
        raise ValueError(f"backbone.injection_layers must be one of {sorted(INJECTION_LAYERS)}, got {layers!r}")
    parts = name.split(".")
    if parts[0] != "up_blocks" or ".attn1." not in name or parts[2] != "attentions":
        return False
    block, idx = int(parts[1]), int(parts[3])
    allowed = INJECTION_LAYERS[layers]
    return block in (1, 2, 3) if allowed is None else (block, idx) in allowed


def install_injection(unet, state: InjectionState, layers: str = "diffusest") -> list:
    """attn1 of the ``layers`` set -> InjectionAttnProcessor; conv2 of up_blocks 1-2 resnets -> hooks."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = {}
    for name in unet.attn_processors:
        hit = injected_attention(name, layers)
        procs[name] = InjectionAttnProcessor(state) if hit else AttnProcessor2_0()
    unet.set_attn_processor(procs)

    def conv2_hook(module, inputs, output):
        if state.mode != "content":
            return None
        state.fired["content"] += 1
        return state.ref(output)                                  # targets get the reference's features

    return [r.conv2.register_forward_hook(conv2_hook)
            for b in (1, 2) for r in unet.up_blocks[b].resnets]


__all__ = ["INJECTION_LAYERS", "injected_attention", "injection_schedule", "InjectionState", "InjectionAttnProcessor", "install_injection"]
