"""Constraints instead of hand-tuned weights: a Lagrangian whose multipliers dual ascent finds.

    reward.constraints = {"fidelity": 0.02, "style": 1.05}        # E[term] <= bound
    r^L_t = -( sum_{u not constrained} w_u term_u(t) + sum_c lambda_c (term_c(t) - bound_c) )
    lambda_c <- max(0, lambda_c + train.dual_lr * clip((mean_t term_c(t) - bound_c) / bound_c, -1, 1))   per update

Terms are read as the weighted sum reads them (``rewards.normalised``: a relative term is a multiple of
N(I_t)'s, so 1.05 = "within 5 % of the per-frame stylization"; an absolute term, a distance to N(I_t),
in its own units). The learner maximises r^L; a multiplier grows while its constraint is violated and
shrinks to 0 where it is slack, so where a constraint binds is read off the multipliers (logged, and
kept in the checkpoint: a resumed run continues with the same weights). Without constraints r^L is the
reward itself. Each multiplier starts at the term's configured weight (``rewards.weight``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vstlib.rl.rewards import normalised, weight


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
        self.cfg_reward = cfg_reward
        self.names = tuple(cfg_reward.constraints)
        self.register_buffer("bound", torch.tensor([float(cfg_reward.constraints[n]) for n in self.names]))
        self.register_buffer("lam", torch.tensor([weight(cfg_reward, n) for n in self.names], dtype=torch.float32))

    def reward(self, terms: dict, base: dict) -> torch.Tensor:
        """r^L per frame (n,): the unconstrained terms at their weights, the constrained ones at lambda."""
        norm = normalised(terms, self.cfg_reward, base)
        total = 0.0
        for name in self.cfg_reward.terms:
            if name in self.names:
                i = self.names.index(name)
                total = total + self.lam[i] * (norm[name] - self.bound[i])
            else:
                total = total + weight(self.cfg_reward, name) * norm[name]
        return -total

    @torch.no_grad()
    def ascend(self, terms: dict, base: dict, lr: float) -> None:
        """One dual step from the terms (n,) of the frames just updated on."""
        if not self.names:
            return
        norm = normalised({k: v.detach() for k, v in terms.items()}, self.cfg_reward, base)
        viol = torch.stack([norm[n].float().mean() for n in self.names]) / self.bound - 1   # (C,) relative violation
        viol = viol.clamp(-1, 1)                   # a term many times its bound must not throw lambda far past
        if torch.isfinite(viol).all():
            self.lam.add_(lr * viol).clamp_(min=0)

    def values(self) -> dict:
        return {f"lambda_{n}": float(v) for n, v in zip(self.names, self.lam)}


__all__ = ["Multipliers"]
