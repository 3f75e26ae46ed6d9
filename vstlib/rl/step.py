"""The policy's transition, written once: training, evaluation, the competitors and `vst stylize` call it.

    o_t      = (L_{t-1}, L_t)                        observation "pair" (the paper)
               + (warp(L^out_{t-1}, bw_t), v_t)      observation "flow": the previous OUTPUT latent,
                                                     warped along the input's flow, and its visibility
    a_t      ~ pi(. | o_t)                           mean, sample or reparameterised sample
    L^out_t  = L_t + a_t                             rendered as S_t = render(L^out_t)

Frame 0 is the stylizer's own (L^out_0 = L_0): the policy acts from frame 1 on. With the "flow"
observation each state depends on the previous action, so ``unroll`` runs the frames in order;
with "pair" it batches them. Rendering is batched afterwards (observations live in latent space).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.distributions import Normal

from vstlib.flow import warp
from vstlib.rl.policy import log_prob

MODES = ("mean", "sample", "rsample")


@dataclass
class LatentClip:
    """A clip in the stylizer's latent space: what observations are made of."""

    L: torch.Tensor                       # (T,C,h,w) the stylizer's latents L_t
    bw: Optional[torch.Tensor] = None     # (T-1,2,h,w) the input's flow t -> t-1 on the latent grid, in cells
    vis: Optional[torch.Tensor] = None    # (T-1,1,h,w) share of frame t's cell visible in frame t-1

    @property
    def n_frames(self) -> int:
        return self.L.shape[0]


def uses_flow(policy) -> bool:
    return getattr(policy, "observation", "pair") == "flow"


def observe(policy, clip: LatentClip, t: torch.Tensor, warped: Optional[torch.Tensor] = None) -> Normal:
    """pi(. | o_t) for frames ``t`` (n,) >= 1; ``warped`` (n,C,h,w): warp(L^out_{t-1}) for "flow"."""
    if not uses_flow(policy):
        return policy(clip.L[t - 1], clip.L[t])                                  # over (n,C,h,w)
    return policy(clip.L[t - 1], clip.L[t], warped, clip.vis[t - 1])


def act(dist: Normal, mode: str) -> torch.Tensor:
    """The action of a policy distribution: its mean, a sample (no graph) or mu + sigma * eps."""
    if mode == "mean":
        return dist.mean
    if mode == "sample":
        return dist.sample()
    if mode == "rsample":
        return dist.rsample()
    raise ValueError(f"unknown action mode {mode!r}; choose one of {MODES}")


@dataclass
class Unroll:
    """Transitions of frames ``first..first+n-1`` for K parallel samples."""

    actions: torch.Tensor                 # (K,n,C,h,w) a_t
    logp: Optional[torch.Tensor]          # (K,n) log pi(a_t | o_t) under the weights that acted (None for "mean")
    warped: Optional[torch.Tensor]        # (K,n,C,h,w) warp(L^out_{t-1}) each action saw ("flow"), else None
    out: torch.Tensor                     # (K,n,C,h,w) L^out_t = L_t + a_t
    first: int = 1


def unroll(policy, clip: LatentClip, mode: str = "mean", samples: int = 1, first: int = 1,
           last: Optional[int] = None, out_prev: Optional[torch.Tensor] = None, bptt: bool = True) -> Unroll:
    """Act on frames ``first..last`` (default 1..T-1) of ``clip``, K = ``samples`` times.

    ``out_prev`` (K,C,h,w) is L^out_{first-1} (default L_{first-1}: the stylizer's own frame, as at
    frame 0). Gradients follow whatever the caller enables; ``bptt=False`` detaches each warped
    observation, so an action's gradient stops at its own frame (a myopic learner).
    """
    last = clip.n_frames - 1 if last is None else last
    density = mode != "mean"                    # the mean action needs no log-density (evaluation, `vst stylize`)
    t_all = torch.arange(first, last + 1, device=clip.L.device)                 # (n,)
    K = samples
    if not uses_flow(policy):                                                   # batched over t
        dist = observe(policy, clip, t_all)                                     # over (n,C,h,w)
        a = torch.stack([act(dist, mode) for _ in range(K)])                    # (K,n,C,h,w)
        logp = torch.stack([log_prob(dist, a[k].detach()) for k in range(K)]) if density else None   # (K,n)
        return Unroll(a, logp, None, clip.L[t_all][None] + a, first)
    prev = clip.L[first - 1:first].expand(K, -1, -1, -1) if out_prev is None else out_prev   # (K,C,h,w)
    acts, logps, warps, outs = [], [], [], []
    for t in t_all.tolist():                                                    # o_t needs L^out_{t-1}
        w = warp(prev, clip.bw[t - 1:t].expand(K, -1, -1, -1))                   # (K,C,h,w)
        w = w if bptt else w.detach()
        idx = torch.full((K,), t, device=clip.L.device)
        dist = observe(policy, clip, idx, w)                                    # over (K,C,h,w)
        a = act(dist, mode)
        acts.append(a)
        if density:
            logps.append(log_prob(dist, a.detach()))
        warps.append(w)
        prev = clip.L[t:t + 1] + a                                              # (K,C,h,w) L^out_t
        outs.append(prev)
    st = lambda xs: torch.stack(xs, 1)                                          # noqa: E731 (K,n,...)
    return Unroll(st(acts), st(logps) if density else None, st(warps), st(outs), first)


def render(stylizer, base, out: torch.Tensor, first: int = 1) -> torch.Tensor:
    """S_t = render(L^out_t) for frames first..first+n-1: out (n,C,h,w) -> (n,3,H,W)."""
    idx = torch.arange(first, first + out.shape[0], device=out.device)
    return stylizer.render(out, base, idx).float()


@torch.no_grad()
def policy_frames(policy, stylizer, base, clip: LatentClip) -> torch.Tensor:
    """The policy's frames of a whole clip with its mean action (evaluation, figures): (T,3,H,W),
    frame 0 the stylizer's own."""
    u = unroll(policy, clip, "mean")
    S = render(stylizer, base, u.out[0])                                        # (T-1,3,H,W)
    return torch.cat([base.images[:1].to(S), S]).contiguous()


class FixedBlend:
    """A policy without parameters: L^out_t = L_t + b v_t (warp(L^out_{t-1}) - L_t), flow-guided latent
    blending (training-free; b = 0 is the stylizer's own latents). Acts through ``unroll`` like a policy."""

    observation = "flow"

    def __init__(self, b: float):
        self.b = float(b)

    def __call__(self, prev, cur, warped, visible) -> Normal:
        mu = self.b * visible * (warped - cur)                                  # (N,C,h,w)
        return Normal(mu, torch.full_like(mu, 1e-12))


__all__ = ["LatentClip", "Unroll", "observe", "act", "unroll", "render", "policy_frames", "FixedBlend", "uses_flow",
           "MODES"]
