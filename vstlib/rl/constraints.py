"""Constraints instead of hand-tuned weights: a Lagrangian whose multipliers dual ascent finds.

    reward.constraints = {"fidelity": 0.02, "style": 1.05}        # E[term] <= bound
    r^L_t = -( sum_{u not constrained} w_u term_u(t) + sum_c lambda_c (term_c(t) - bound_c) )
    lambda_c <- max(0, lambda_c + train.dual_lr * clip((mean_t term_c(t) - bound_c) / bound_c, -1, 1))   per update

With ``reward.bound_by = "start"`` bound_c is per frame: the bound times the untrained policy's term on
the same frame (``base["start_<c>"]``, added by ``with_start``): a window whose frames are hard for every
policy gets a loose bound, an easy one a tight bound, and 1.0 reads "no worse than where it started".

Terms are read as the weighted sum reads them (``rewards.normalised``: a relative term is a multiple of
N(I_t)'s, so 1.05 = "within 5 % of the per-frame stylization"; an absolute term, a distance to N(I_t),
in its own units). The learner maximises r^L; a multiplier grows while its constraint is violated and
shrinks to 0 where it is slack, so where a constraint binds is read off the multipliers (logged, and
kept in the checkpoint: a resumed run continues with the same weights). Without constraints r^L is the
reward itself. Each multiplier starts at the term's configured weight (``rewards.weight``).
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from vstlib.rl.rewards import EPS, normalised, relative, weight

START = "start_"      # base terms under this prefix: the untrained policy's terms of the same frames
BOUND_BY = ("value", "start")


class Multipliers(nn.Module):
    """The Lagrange multipliers of ``cfg_reward.constraints`` (buffers: saved with the learner's state)."""

    def __init__(self, cfg_reward):
        super().__init__()
        unknown = [n for n in cfg_reward.constraints if n not in cfg_reward.terms]
        if unknown:
            raise ValueError(f"reward.constraints names {unknown}, not reward terms of this run "
                             f"({list(cfg_reward.terms)}); add them to reward.terms")
        bad = {n: b for n, b in cfg_reward.constraints.items() if not float(b) > 0}
        if bad:
            raise ValueError(f"reward.constraints bounds must be > 0, got {bad}")
        if cfg_reward.bound_by not in BOUND_BY:
            raise ValueError(f"reward.bound_by must be one of {BOUND_BY}, got {cfg_reward.bound_by!r}")
        self.cfg_reward = cfg_reward
        self.names = tuple(cfg_reward.constraints)
        self.register_buffer("bound", torch.tensor([float(cfg_reward.constraints[n]) for n in self.names]))
        self.register_buffer("lam", torch.tensor([weight(cfg_reward, n) for n in self.names], dtype=torch.float32))

    def levels(self, base: dict) -> list:
        """Each constraint's bound as its normalised term reads: a number, or per frame (n,) with
        ``bound_by="start"`` (the bound times the start's term, normalised like the term)."""
        if self.cfg_reward.bound_by == "value":
            return list(self.bound)
        missing = [START + n for n in self.names if START + n not in base]
        if missing:
            raise ValueError(f"reward.bound_by='start' needs the untrained policy's terms {missing} of the same "
                             "frames (rl.constraints.with_start adds them)")
        out = []
        for b, n in zip(self.bound, self.names):
            start = base[START + n]
            if self.cfg_reward.normalize == "baseline" and relative(n):
                start = start / base[n].clamp_min(EPS)
            out.append(b * start)
        return out

    def reward(self, terms: dict, base: dict) -> torch.Tensor:
        """r^L per frame (n,): the unconstrained terms at their weights, the constrained ones at lambda."""
        norm, level = normalised(terms, self.cfg_reward, base), self.levels(base)
        total = 0.0
        for name in self.cfg_reward.terms:
            if name in self.names:
                i = self.names.index(name)
                total = total + self.lam[i] * (norm[name] - level[i])
            else:
                total = total + weight(self.cfg_reward, name) * norm[name]
        return -total

    @torch.no_grad()
    def ascend(self, terms: dict, base: dict, lr: float) -> None:
        """One dual step from the terms (n,) of the frames just updated on."""
        if not self.names:
            return
        norm = normalised({k: v.detach() for k, v in terms.items()}, self.cfg_reward, base)
        level = torch.stack([torch.as_tensor(v).float().mean() for v in self.levels(base)])
        viol = torch.stack([norm[n].float().mean() for n in self.names]) / level - 1   # (C,) relative violation
        viol = viol.clamp(-1, 1)                   # a term many times its bound must not throw lambda far past
        if torch.isfinite(viol).all():
            self.lam.add_(lr * viol).clamp_(min=0)

    def values(self) -> dict:
        return {f"lambda_{n}": float(v) for n, v in zip(self.names, self.lam)}


@torch.no_grad()
def with_start(ep, start_frames: torch.Tensor, reward, cfg_reward):
    """``ep`` with the constrained terms of ``start_frames`` (T,3,H,W), the untrained policy's frames of
    the same episode or window, among its base terms (``START`` + name): what ``bound_by="start"`` reads."""
    if cfg_reward.bound_by != "start" or not cfg_reward.constraints:
        return ep
    t = reward.terms(start_frames, ep.frames, ep.flows, ep.base_terms, ep.reference, ep.loss_size)
    return replace(ep, base_terms={**ep.base_terms, **{START + n: t[n].detach() for n in cfg_reward.constraints}})


__all__ = ["Multipliers", "with_start", "START", "BOUND_BY"]
