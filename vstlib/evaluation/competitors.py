"""Competitors and controls scored beside the learned policy: what a learner must beat.

Each method turns one episode (a clip with the stylizer's output, its latents and the input's
flows) into stylized frames S (T,3,H,W); ``vstlib.evaluation.compare`` scores them like the policy.

    latent_blend   L^out_t = L_t + b v_t (warp(L^out_{t-1}) - L_t), S_t = render(L^out_t): flow-guided
                   blending in the latent the policy acts on (training-free; the policy's own step
                   with a fixed rule, ``step.FixedBlend``)
    pixel_blend    S_t = D_t + b m_t (warp(S_{t-1}) - D_t) on the stylizer's frames D_t: post-hoc
                   blending in pixel space (training-free)
    frozen_first   S_t = S_0 for every t: a reward-hacking control, perfectly "consistent", follows no motion
    direct         delta_1..delta_{T-1} optimised by Adam on the clip's own reward through ``render``
                   (no policy: the best the reward's proxy allows at that budget); from a policy's
                   actions, "policy + k refinement steps" (``learners.refine``, the distillation's labels)

(The other control, one learned constant latent offset, is a policy: ``policy.head="constant"``.)
v_t / m_t are the input's visibility of frame t in frame t-1 (latent cells / pixels), and warps
follow the input's backward flow, so a blend only mixes what the input says is the same surface.
"""
from __future__ import annotations

from typing import Optional

import torch

from vstlib.flow import warp
from vstlib.rl.constraints import Multipliers, with_start
from vstlib.rl.episodes import Env, Episode
from vstlib.rl.learners import refine
from vstlib.rl.step import FixedBlend, policy_frames, render


def latent_blend(ep: Episode, stylizer, b: float) -> torch.Tensor:
    """Flow-guided latent blending with weight ``b`` in [0,1] (0 = the stylizer's own frames)."""
    return policy_frames(FixedBlend(b), stylizer, ep.base, ep.clip)


@torch.no_grad()
def pixel_blend(ep: Episode, b: float) -> torch.Tensor:
    """Post-hoc blending of the stylizer's frames along the input's flow."""
    D = ep.base.images.float()                                                 # (T,3,H,W)
    bw, m = ep.flows["bw"].to(D), ep.flows["mask_bw"].to(D)                    # (T-1,2|1,H,W)
    out = [D[0:1]]
    for t in range(1, D.shape[0]):
        out.append(D[t:t + 1] + b * m[t - 1:t] * (warp(out[-1], bw[t - 1:t]) - D[t:t + 1]))
    return torch.cat(out)


@torch.no_grad()
def frozen_first(ep: Episode) -> torch.Tensor:
    """Frame 0 of the stylizer repeated: the reward-hacking control."""
    D = ep.base.images.float()
    return D[0:1].expand_as(D).contiguous()


def direct(ep: Episode, stylizer, reward, steps: int, lr: float, init: Optional[torch.Tensor] = None,
           dual_lr: float = 0.0) -> torch.Tensor:
    """Per-clip gradient descent on the actions themselves (no policy): ``steps`` Adam steps of the
    clip's whole reward through ``render``, from ``init`` (T-1,C,h,w) (default 0: the stylizer's own
    latents; a policy's actions: "policy + k refinement steps"); the reward's constraints become a
    Lagrangian with per-clip dual ascent (``dual_lr``). Returns the frames of the last step."""
    agent = _Objective(reward.cfg_reward)
    actions = torch.zeros_like(ep.clip.L[1:]) if init is None else init
    if reward.cfg_reward.bound_by == "start":                                  # where the optimisation starts
        with torch.no_grad():
            S0 = torch.cat([ep.base.images[:1], render(stylizer, ep.base, ep.clip.L[1:] + actions)]).clamp(0, 1)
        ep = with_start(ep, S0, reward, reward.cfg_reward)
    delta, _ = refine_actions(stylizer, reward, ep, actions, agent, steps, lr, dual_lr)
    with torch.no_grad():
        return torch.cat([ep.base.images[:1], render(stylizer, ep.base, ep.clip.L[1:] + delta)]).contiguous()


class _Objective:
    """r^L with the reward's constraints (``constraints.Multipliers``), outside a training run."""

    def __init__(self, cfg_reward):
        self.multipliers = Multipliers(cfg_reward)

    def reward(self, terms, base):
        return self.multipliers.reward(terms, base)


def refine_actions(stylizer, reward, ep, actions, agent, steps, lr, dual_lr=0.0):
    """``learners.refine`` on an environment made of this stylizer and reward."""
    return refine(Env(stylizer, reward, None, ep.frames.device), ep, actions, agent, steps, lr, dual_lr)


BLENDS = {"latent_blend": lambda ep, stylizer, b: latent_blend(ep, stylizer, b),
          "pixel_blend": lambda ep, stylizer, b: pixel_blend(ep, b)}

__all__ = ["latent_blend", "pixel_blend", "frozen_first", "direct", "BLENDS"]
