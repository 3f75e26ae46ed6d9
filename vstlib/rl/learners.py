"""The learners: how one chunk of transitions becomes a loss. Chosen by ``cfg.train.learner``.

    LEARNERS = {"reinforce": ..., "rloo": ..., "pathwise": ...}
    loss, rec = LEARNERS[name].loss(policy, ep, tr, chunk, stylizer, reward_model, cfg)

The trainer (``vstlib.rl.train``) rolls each clip out once (``rollout``, K = ``samples(cfg)``
episodes, no graph), then calls ``loss`` for each chunk of ``train.accumulation`` transitions
and takes one Adam step per chunk. Every loss is divided by the REAL chunk size (the last chunk
of a clip may be shorter).

reinforce (the paper)   A_t = r_t - r_t^baseline (the per-frame baseline's reward on the same frame)
                        loss = -(w_t * log pi(a_t | o_t) * A_t).mean()
rloo                    K samples per transition; A_t^k = r_t^k - mean_{j != k} r_t^j
                        (leave-one-out, optionally / std over k); loss as REINFORCE, mean over k
pathwise                a_t = mu + sigma * eps (reparameterised), S_t = render(L_t + a_t) with
                        grad, loss = -r_t(S_{t-1}, S_t).mean(): the reward is backpropagated
                        through the decoder, Gram, perceptual distance and the warp with the
                        input's FIXED flows (as DRaFT / AlignProp do for diffusion); a chunk's
                        first past frame is the previous chunk's last render, held constant

Chunks after the first of a clip were sampled under older weights (the rollout happens once per
clip): the policy-gradient learners weight each term by the truncated importance ratio
w_t = min(pi_now(a_t) / pi_old(a_t), ``train.max_ratio``) (no gradient through w; the
first chunk has w = 1 exactly; ``max_ratio=0`` turns the correction off, the pre-fix behaviour).
Truncation (as in Retrace / V-trace) bounds the variance a 256-4096-dimensional density ratio
can reach.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vstlib.rl import policy as policy_lib
from vstlib.rl.episodes import policy_dist


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


# --------------------------------------------------------------------------- the updates
def policy_gradient_loss(advantage_fn: Callable):
    """A score-function learner (REINFORCE, RLOO) with the given advantage."""

    def loss(policy, ep, tr, chunk, stylizer, reward_model, cfg):
        K, n = tr.actions.shape[0], chunk.numel()
        rewards, base = tr.terms["reward"][:, chunk], tr.base_terms["reward"][chunk]   # (K,n), (n,)
        adv = advantage_fn(rewards, base, cfg.train)                                   # (K,n)
        extra = tr.extra[:, chunk].flatten(0, 1) if tr.extra is not None else None     # (K*n,C+1,h,w)
        dist = policy_dist(policy, ep, chunk.repeat(K), extra)                         # current weights
        logp = policy_lib.log_prob(dist, tr.actions[:, chunk].flatten(0, 1)).view(K, n)  # (K,n)
        w = importance_weight(logp, tr.logp[:, chunk], cfg.train.max_ratio)           # (K,n)
        loss = -(w * logp * adv).sum() / (K * n)                                       # mean over k, t
        terms = {k: v[:, chunk] for k, v in tr.terms.items()}                          # (K,n) each
        return loss, {"advantage": adv, "reward": rewards, "ratio": w, "terms": terms}

    return loss


def pathwise_loss(policy, ep, tr, chunk, stylizer, reward_model, cfg):
    """Backpropagate the reward of transitions ``chunk`` through the reparameterised actions.

    S_{s-1}, the past of the chunk's first transition, is the previous chunk's last frame, kept
    from its render (one Adam step old, a constant here): re-rendering it with grad cost a fifth
    of every update's decoding (issue 10's budget) for one pair's gradient into the past frame.
    """
    s, e = int(chunk[0]) + 1, int(chunk[-1]) + 1                  # current frames s..e; pasts s-1..e-1
    past = tr.rendered.get(s - 1) if s > 1 else None              # (1,3,H,W) or None
    first = s if past is not None else max(s - 1, 1)              # no kept frame: render S_{s-1} too
    frames = torch.arange(first, e + 1, device=ep.obs.device)                  # frames to render (m,)
    idx = frames - 1                                                           # their transitions
    extra = tr.extra[0, idx] if tr.extra is not None else None                 # observations of the rollout
    dist = policy_dist(policy, ep, idx, extra)                                 # over (m,C,h,w), with grad
    a = dist.rsample()                                                         # mu + sigma * eps
    S = stylizer.render(ep.obs[frames] + a, ep.base, frames).float()           # (m,3,H,W), with grad
    tr.rendered[e] = S[-1:].detach()                                           # the next chunk's S_{s-1}
    if s == 1:                                                                 # S_0 is the baseline frame
        S = torch.cat([ep.base.images[:1].to(S), S], dim=0)
    elif past is not None:
        S = torch.cat([past.to(S), S], dim=0)
    sl = slice(s - 1, e)                                                       # transitions s-1..e-1
    flows = {k: ep.flows[k][sl] for k in ("fw", "bw", "mask_fw", "mask_bw")}
    base = {k: v[chunk] for k, v in ep.base_terms.items()}
    terms = reward_model.differentiable_terms(S.clamp(0, 1), ep.frames[s - 1:e + 1], flows, base)
    rewards = terms["reward"][None]                                            # (1,n)
    loss = -rewards.sum() / chunk.numel()
    return loss, {"advantage": (rewards - base["reward"]).detach(), "reward": rewards.detach(),
                  "ratio": torch.ones_like(rewards), "terms": {k: v.detach()[None] for k, v in terms.items()},
                  "queries": chunk.numel()}                                    # rewards computed (with grad)


@dataclass(frozen=True)
class Learner:
    name: str
    loss: Callable                 # (policy, ep, tr, chunk, stylizer, reward_model, cfg) -> (loss, info)
    samples: Callable              # cfg_train -> K rollouts per clip
    render: bool = True            # does the loss need the rollout's rendered frames and rewards?


LEARNERS: dict[str, Learner] = {
    "reinforce": Learner("reinforce", policy_gradient_loss(baseline_advantage), lambda c: 1),
    "rloo": Learner("rloo", policy_gradient_loss(leave_one_out_advantage), lambda c: int(c.samples)),
    "pathwise": Learner("pathwise", pathwise_loss, lambda c: 1, render=False),   # renders its own chunks
}


def gradient_cosine(policy, ep, stylizer, reward_model, cfg, learner: str = "reinforce",
                    samples: int = 32) -> float:
    """Signal-to-noise of a score-function learner: the cosine between its gradient estimate from
    ``samples`` rollouts of clip ``ep`` and the pathwise (exact up to sigma) gradient of the same
    reward, over the mean's parameters (sigma excluded). ~1: the advantage carries the direction;
    ~0: noise (the paper's setting: ~0.03 for one sample at sigma 0.1 on real models).
    """
    from vstlib.rl.episodes import rollout

    params = [p for n, p in policy.named_parameters() if n != "log_sigma"]
    chunk = torch.arange(ep.n_steps, device=ep.obs.device)

    def grad(loss_fn, K):
        with torch.no_grad():
            tr = rollout(policy, ep, stylizer, reward_model, samples=K)
        loss, _ = loss_fn(policy, ep, tr, chunk, stylizer, reward_model, cfg)
        g = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])

    exact = grad(pathwise_loss, 1)
    est = grad(get_learner(learner).loss, samples)
    return float(torch.nn.functional.cosine_similarity(exact, est, dim=0))


def get_learner(name: str) -> Learner:
    if name not in LEARNERS:
        raise ValueError(f"unknown train.learner {name!r}; choose one of {sorted(LEARNERS)}")
    return LEARNERS[name]


__all__ = ["LEARNERS", "Learner", "get_learner", "baseline_advantage", "leave_one_out_advantage",
           "importance_weight", "policy_gradient_loss", "pathwise_loss", "gradient_cosine"]
