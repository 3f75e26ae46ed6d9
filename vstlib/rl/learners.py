"""The learners: how a clip's transitions become losses, picked by name (``train.learner``).

    batch = learner.collect(policy, env, ep, cfg_train)             # once per clip visit, no graph
    loss, info = learner.loss(policy, env, ep, batch, chunk, cfg_train)   # per chunk: one Adam step

reinforce (the paper)   a_t sampled, A_t = r_t - r_t^baseline (the per-frame baseline's reward on
                        the same frame), loss = -(w_t * log pi(a_t | o_t) * A_t).mean()
rloo                    K samples per transition, A^k_t = r^k_t - mean_{j != k} r^j_t (leave-one-out,
                        optionally / std over k); loss as REINFORCE, mean over k
pathwise                reward backpropagation (not reinforcement learning: no score function, no
                        value): a_t = mu + sigma * eps, S_t = render(L_t + a_t) with grad, and
                        loss = -r_t(S_{t-1}, S_t).mean(); the observation is built from the outputs
                        this chain itself produced, and with ``train.bptt`` the gradient runs back
                        through the chain within a chunk (truncated BPTT over ``accumulation`` frames);
                        the chunk's first past frame and state come from the previous chunk, held constant

A score-function learner samples a clip's actions once, so the chunks after its first were sampled
under older weights: each term is weighted by the truncated importance ratio
w_t = min(pi_now(a_t) / pi_old(a_t), ``train.max_ratio``) (no gradient through w; 1 on the first
chunk; ``max_ratio=0`` switches it off). Every loss is divided by the real chunk size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from vstlib.registry import Registry
from vstlib.rl.policy import log_prob
from vstlib.rl.step import Unroll, observe, render, unroll


# --------------------------------------------------------------------------- advantages
def baseline_advantage(rewards: torch.Tensor, base_rewards: torch.Tensor, cfg_train) -> torch.Tensor:
    """REINFORCE's: A = r - r^baseline. rewards (K,n), base_rewards (n,) -> (K,n)."""
    return rewards - base_rewards


def leave_one_out_advantage(rewards: torch.Tensor, base_rewards: torch.Tensor, cfg_train) -> torch.Tensor:
    """RLOO's: A^k = r^k - mean_{j != k} r^j over the K samples of a transition. (K,n) -> (K,n)."""
    K = rewards.shape[0]
    if K < 2:
        raise ValueError("rloo needs train.samples >= 2 (leave-one-out over the K samples)")
    adv = rewards - (rewards.sum(0, keepdim=True) - rewards) / (K - 1)        # (K,n)
    if cfg_train.normalize_advantage:
        adv = adv / (rewards.std(0, keepdim=True) + 1e-8)
    return adv


def importance_weight(logp_now: torch.Tensor, logp_old: torch.Tensor, max_ratio: float) -> torch.Tensor:
    """min(pi_now / pi_old, max_ratio), no gradient; all ones when ``max_ratio`` <= 0."""
    if max_ratio <= 0:
        return torch.ones_like(logp_now)
    return (logp_now.detach() - logp_old).exp().clamp(max=max_ratio)


# --------------------------------------------------------------------------- score-function learners
@dataclass
class Rollout:
    """K sampled episodes of a clip, rendered and scored (what a score-function learner learns from)."""

    u: Unroll                      # actions (K,T-1,C,h,w), their log-probs and observations
    stylized: torch.Tensor         # (K,T,3,H,W) S_0 (the stylizer's) then S_1..S_{T-1}
    terms: dict                    # each reward term and "reward", (K,T-1)
    queries: int                   # frames rendered and scored


@torch.no_grad()
def rollout(policy, env, ep, samples: int = 1) -> Rollout:
    """Sample K episodes of clip ``ep`` with the current policy, render and score every frame.

    A NaN/inf rendered frame (a diverging decoder) must not abort training: the baseline frame is
    scored in its place and every transition touching it is marked NaN (the update is skipped)."""
    u = unroll(policy, ep.clip, "sample", samples)
    stylized, terms = [], []
    for k in range(samples):
        S = torch.cat([ep.base.images[:1], render(env.stylizer, ep.base, u.out[k])]).contiguous()   # (T,3,H,W)
        bad = ~torch.isfinite(S).flatten(1).all(1)                             # (T,)
        t = env.reward.terms(torch.where(bad[:, None, None, None], ep.base.images.to(S), S), ep.frames, ep.flows,
                             ep.base_terms)
        if bad.any():
            t = {key: v.masked_fill(bad[1:] | bad[:-1], float("nan")) for key, v in t.items()}
        stylized.append(S)
        terms.append(t)
    terms = {key: torch.stack([t[key] for t in terms]) for key in terms[0]}  # (K,T-1) each
    return Rollout(u, torch.stack(stylized), terms, samples * ep.n_steps)


def score_function(advantage_fn: Callable) -> Callable:
    """A score-function loss (REINFORCE, RLOO) with the given advantage."""

    def loss(policy, env, ep, ro: Rollout, chunk: torch.Tensor, cfg_train):
        K, n = ro.u.actions.shape[0], chunk.numel()
        rewards, base = ro.terms["reward"][:, chunk], ep.base_terms["reward"][chunk]   # (K,n), (n,)
        adv = advantage_fn(rewards, base, cfg_train)                                    # (K,n)
        warped = ro.u.warped[:, chunk].flatten(0, 1) if ro.u.warped is not None else None   # (K*n,C,h,w)
        dist = observe(policy, ep.clip, (chunk + 1).repeat(K), warped)                  # current weights
        logp = log_prob(dist, ro.u.actions[:, chunk].flatten(0, 1)).view(K, n)          # (K,n)
        w = importance_weight(logp, ro.u.logp[:, chunk], cfg_train.max_ratio)           # (K,n)
        frames_ok = bool(torch.isfinite(ro.stylized[:, chunk + 1]).all())
        return -(w * logp * adv).sum() / (K * n), {
            "advantage": adv, "reward": rewards, "ratio": w, "terms": {k: v[:, chunk] for k, v in ro.terms.items()},
            "queries": 0, "finite_frames": frames_ok}

    return loss


# --------------------------------------------------------------------------- reward backpropagation
@dataclass
class Chain:
    """The pathwise learner's chain across the chunks of one clip visit (detached at chunk ends)."""

    out: dict = field(default_factory=dict)      # frame t -> (1,C,h,w) L^out_t: the next chunk's state
    frames: dict = field(default_factory=dict)   # frame t -> (1,3,H,W) S_t: the next chunk's past frame


def pathwise_loss(policy, env, ep, chain: Chain, chunk: torch.Tensor, cfg_train):
    """Backpropagate the reward of transitions ``chunk`` (frames s..e) through reparameterised actions,
    acting on the chain's own previous output."""
    s, e = int(chunk[0]) + 1, int(chunk[-1]) + 1
    u = unroll(policy, ep.clip, "rsample", first=s, last=e, out_prev=chain.out.get(s - 1), bptt=cfg_train.bptt)
    S = render(env.stylizer, ep.base, u.out[0], s)                             # (n,3,H,W), with grad
    past = ep.base.images[:1] if s == 1 else chain.frames[s - 1]               # S_{s-1}, a constant
    chain.out[e], chain.frames[e] = u.out[0, -1:].detach(), S[-1:].detach()
    S = torch.cat([past.to(S), S]).clamp(0, 1)                                 # (n+1,3,H,W)
    flows = {k: ep.flows[k][s - 1:e] for k in ("fw", "bw", "mask_fw", "mask_bw")}
    base = {k: v[chunk] for k, v in ep.base_terms.items()}
    terms = env.reward.differentiable_terms(S, ep.frames[s - 1:e + 1], flows, base)
    rewards = terms["reward"][None]                                            # (1,n)
    return -rewards.sum() / chunk.numel(), {
        "advantage": (rewards - base["reward"]).detach(), "reward": rewards.detach(),
        "ratio": torch.ones_like(rewards), "terms": {k: v.detach()[None] for k, v in terms.items()},
        "queries": chunk.numel(), "finite_frames": True}


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Learner:
    name: str
    collect: Callable              # (policy, env, ep, cfg_train) -> what the loss reads (no graph)
    loss: Callable                 # (policy, env, ep, batch, chunk, cfg_train) -> (loss, info)


LEARNERS = Registry("learner", "train.learner")
LEARNERS["reinforce"] = Learner("reinforce", lambda policy, env, ep, c: rollout(policy, env, ep, 1),
                                score_function(baseline_advantage))
LEARNERS["rloo"] = Learner("rloo", lambda policy, env, ep, c: rollout(policy, env, ep, int(c.samples)),
                           score_function(leave_one_out_advantage))
LEARNERS["pathwise"] = Learner("pathwise", lambda policy, env, ep, c: Chain(), pathwise_loss)


def gradient_cosine(policy, env, ep, cfg_train, learner: str = "reinforce", samples: int = 32,
                    exact_samples: int = 8) -> float:
    """Signal-to-noise of a score-function learner: the cosine between its gradient estimate from
    ``samples`` rollouts of clip ``ep`` and the pathwise gradient of the same reward averaged over
    ``exact_samples`` draws (one chunk: the whole clip), over the mean's parameters (sigma
    excluded). ~1: the advantage carries the direction; ~0: noise."""
    params = [p for n, p in policy.named_parameters() if n != "log_sigma"]
    chunk = torch.arange(ep.n_steps, device=ep.clip.L.device)

    def grad(loss):
        g = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])

    exact = sum(grad(pathwise_loss(policy, env, ep, Chain(), chunk, cfg_train)[0]) for _ in range(exact_samples))
    est = grad(LEARNERS.pick(learner).loss(policy, env, ep, rollout(policy, env, ep, samples), chunk, cfg_train)[0])
    return float(torch.nn.functional.cosine_similarity(exact, est, dim=0))


__all__ = ["LEARNERS", "Learner", "Rollout", "Chain", "rollout", "score_function", "pathwise_loss",
           "baseline_advantage", "leave_one_out_advantage", "importance_weight", "gradient_cosine"]
