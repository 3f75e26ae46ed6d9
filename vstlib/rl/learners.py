"""The learners: how a clip's transitions become losses, picked by name (``train.learner``).

    agent = Agent(cfg, policy)                                       # multipliers (+ critic): what else learns
    batch = learner.collect(policy, env, ep, agent, cfg_train)       # once per clip visit, no graph
    loss, info = learner.loss(policy, env, ep, batch, chunk, agent, cfg_train)   # per chunk: one Adam step

Every learner maximises r^L_t, the reward with ``reward.constraints`` turned into a Lagrangian
(``constraints.Multipliers``; without constraints, the reward itself).

reinforce (the paper)   a_t sampled, A_t = r_t - r_t^baseline (the per-frame baseline's reward on
                        the same frame), loss = -(w_t * log pi(a_t | o_t) * A_t).mean()
rloo                    K samples per transition, A^k_t = r^k_t - mean_{j != k} r^j_t (leave-one-out,
                        optionally / std over k); loss as REINFORCE, mean over k
pathwise                reward backpropagation (not reinforcement learning: no score function, no
                        value): a_t = mu + sigma * eps, S_t = render(L_t + a_t) with grad, and
                        loss = -sum_t r_t / n over a window of n = ``accumulation`` frames; the
                        observation is built from the outputs this chain itself produced, and with
                        ``train.bptt`` the gradient runs back through the chain within the window
                        (truncated BPTT); the window's first past frame and state come from the
                        previous window, held constant
shac                    actor-critic with an analytic policy gradient (Xu et al. 2022, SHAC): the
                        pathwise window plus the critic's value of the state after it,
                        loss_pi = -(sum_i gamma^i r_{s+i} + gamma^n V(o_{e+1})) / n (the gradient
                        reaches the chain's last output through o_{e+1}); the critic regresses
                        TD(lambda) returns of the window, V(o_t) = B_t + tau_t c(o_t) (``policy.Critic``)
distill                 amortised refinement (DAgger): the policy acts with its mean along its own
                        chain, ``refine_steps`` Adam steps on those actions against r^L give labels
                        a*_t, and the policy's mean on the states it visited regresses onto them

A score-function learner samples a clip's actions once, so the chunks after its first were sampled
under older weights: each term is weighted by the truncated importance ratio
w_t = min(pi_now(a_t) / pi_old(a_t), ``train.max_ratio``) (no gradient through w; 1 on the first
chunk; ``max_ratio=0`` switches it off). Every loss is divided by the real chunk size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call

from vstlib.flow import warp
from vstlib.registry import Registry
from vstlib.rl.constraints import Multipliers
from vstlib.rl.policy import Critic, log_prob
from vstlib.rl.step import Unroll, observe, render, unroll, uses_flow


# --------------------------------------------------------------------------- what learns beside the policy
class Agent(nn.Module):
    """The learner's own state: the Lagrange multipliers and, for an actor-critic, the critic. Saved in
    the checkpoint; the critic's parameters are the optimiser's second group (``train.critic_lr``)."""

    def __init__(self, cfg, policy):
        super().__init__()
        self.multipliers = Multipliers(cfg.reward)
        spec = LEARNERS.pick(cfg.train.learner)
        self.critic = Critic(cfg.policy.latent_channels, cfg.train.critic_hidden, policy.observation) \
            if spec.critic else None

    def reward(self, terms: dict, base: dict) -> torch.Tensor:
        """r^L of frames with ``terms`` against the baseline's ``base`` (same shapes, broadcast)."""
        return self.multipliers.reward(terms, base)


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
                             ep.base_terms, ep.reference, ep.loss_size)
        if bad.any():
            t = {key: v.masked_fill(bad[1:] | bad[:-1], float("nan")) for key, v in t.items()}
        stylized.append(S)
        terms.append(t)
    terms = {key: torch.stack([t[key] for t in terms]) for key in terms[0]}  # (K,T-1) each
    return Rollout(u, torch.stack(stylized), terms, samples * ep.n_steps)


def score_function(advantage_fn: Callable) -> Callable:
    """A score-function loss (REINFORCE, RLOO) with the given advantage, on r^L."""

    def loss(policy, env, ep, ro: Rollout, chunk: torch.Tensor, agent: Agent, cfg_train):
        K, n = ro.u.actions.shape[0], chunk.numel()
        base_terms = {k: v[chunk] for k, v in ep.base_terms.items()}
        rewards = agent.reward({k: v[:, chunk] for k, v in ro.terms.items()}, base_terms)   # (K,n)
        adv = advantage_fn(rewards, agent.reward(base_terms, base_terms), cfg_train)      # (K,n)
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
    """A chain's state across the windows of one clip visit (detached at window ends)."""

    out: dict = field(default_factory=dict)      # frame t -> (1,C,h,w) L^out_t: the next window's state
    frames: dict = field(default_factory=dict)   # frame t -> (1,3,H,W) S_t: the next window's past frame


@dataclass
class Window:
    """Frames s..e acted on along the chain, rendered and scored, with the graph."""

    s: int
    e: int
    u: Unroll                      # (1,n,...) actions, observations, outputs
    terms: dict                    # each term (n,), with grad
    base: dict                     # the baseline's terms of the same frames (n,)
    reward: torch.Tensor           # r^L (n,), with grad


def act_window(policy, env, ep, chain: Chain, chunk: torch.Tensor, agent: Agent, cfg_train,
               mode: str = "rsample") -> Window:
    """Act on transitions ``chunk`` (frames s..e) from the chain's previous output, render, score r^L."""
    s, e = int(chunk[0]) + 1, int(chunk[-1]) + 1
    u = unroll(policy, ep.clip, mode, first=s, last=e, out_prev=chain.out.get(s - 1), bptt=cfg_train.bptt)
    S = render(env.stylizer, ep.base, u.out[0], s)                             # (n,3,H,W), with grad
    past = ep.base.images[:1] if s == 1 else chain.frames[s - 1]               # S_{s-1}, a constant
    chain.out[e], chain.frames[e] = u.out[0, -1:].detach(), S[-1:].detach()
    S = torch.cat([past.to(S), S]).clamp(0, 1)                                 # (n+1,3,H,W)
    flows = {k: ep.flows[k][s - 1:e] for k in ("fw", "bw", "mask_fw", "mask_bw")}
    base = {k: v[chunk] for k, v in ep.base_terms.items()}
    ref = None if ep.reference is None else ep.reference[s - 1:e + 1]
    terms = env.reward.differentiable_terms(S, ep.frames[s - 1:e + 1], flows, base, ref, ep.loss_size)
    return Window(s, e, u, terms, base, agent.reward(terms, base))


def _info(w: Window, agent: Agent, queries: int, **extra) -> dict:
    r = w.reward.detach()[None]                                                # (1,n)
    return {"advantage": r - agent.reward(w.base, w.base), "reward": r, "ratio": torch.ones_like(r),
            "terms": {k: v.detach()[None] for k, v in w.terms.items()}, "queries": queries, "finite_frames": True,
            **extra}


def pathwise_loss(policy, env, ep, chain: Chain, chunk: torch.Tensor, agent: Agent, cfg_train):
    """Backpropagate r^L of the window ``chunk`` through reparameterised actions along the chain."""
    w = act_window(policy, env, ep, chain, chunk, agent, cfg_train)
    return -w.reward.sum() / chunk.numel(), _info(w, agent, chunk.numel())


# --------------------------------------------------------------------------- actor-critic (SHAC)
def baseline_return(agent: Agent, ep, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, tau), (T+1,) each, indexed by frame t = 1..T: B_t the per-frame stylization's discounted
    return from frame t on under r^L, tau_t the discounted number of frames left (both 0 at T)."""
    r = agent.reward(ep.base_terms, ep.base_terms).detach()                    # (T-1,) frames 1..T-1
    T = r.shape[0] + 1
    B, tau = r.new_zeros(T + 1), r.new_zeros(T + 1)
    for t in range(T - 1, 0, -1):
        B[t] = r[t - 1] + gamma * B[t + 1]
        tau[t] = 1 + gamma * tau[t + 1]
    return B, tau


def value(critic, ep, t: torch.Tensor, warped, B, tau, detach_params: bool = False) -> torch.Tensor:
    """V(o_t) = B_t + tau_t c(o_t) for frames ``t`` (n,) >= 1; ``warped`` (n,C,h,w) as the policy saw it.
    ``detach_params``: the critic's weights as constants (the actor's loss must not train the critic)."""
    args = (ep.clip.L[t - 1], ep.clip.L[t]) + ((warped, ep.clip.vis[t - 1]) if critic.observation == "flow" else ())
    if detach_params:
        c = functional_call(critic, {k: v.detach() for k, v in critic.named_parameters()}, args)
    else:
        c = critic(*args)
    return B[t] + tau[t] * c                                                   # (n,)


def td_lambda(rewards: torch.Tensor, next_values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) returns of a window: rewards (n,), next_values (n,) = V(o_{t+1}) (0 after the
    episode's end) -> G (n,), G_i = r_i + gamma ((1 - lam) V_{i+1} + lam G_{i+1}), G_n = V_n."""
    G, out = next_values[-1], []
    for i in reversed(range(rewards.shape[0])):
        G = rewards[i] + gamma * ((1 - lam) * next_values[i] + lam * G) if i < rewards.shape[0] - 1 \
            else rewards[i] + gamma * next_values[i]
        out.append(G)
    return torch.stack(out[::-1])


def shac_loss(policy, env, ep, chain: Chain, chunk: torch.Tensor, agent: Agent, cfg_train):
    """The pathwise window plus the critic's bootstrap (actor), and the critic's TD(lambda) regression."""
    gamma, T = cfg_train.gamma, ep.clip.n_frames
    B, tau = baseline_return(agent, ep, gamma)                                 # (T,) each
    w = act_window(policy, env, ep, chain, chunk, agent, cfg_train)
    n, last = chunk.numel(), w.e + 1 >= T                                      # the episode ends after e?
    disc = gamma ** torch.arange(n, device=w.reward.device, dtype=w.reward.dtype)
    if last:
        v_end = torch.zeros((), device=w.reward.device)
    else:                                                                       # o_{e+1}, from L^out_e with grad
        nxt = torch.tensor([w.e + 1], device=ep.clip.L.device)
        warped = warp_next(ep, w) if uses_flow(policy) else None
        v_end = value(agent.critic, ep, nxt, warped, B, tau, detach_params=True)[0]
    actor = -((disc * w.reward).sum() + gamma ** n * v_end) / n
    # the critic: V(o_t) of the window's states (observations as the policy saw them, no graph)
    t = chunk + 1
    warped = w.u.warped[0].detach() if w.u.warped is not None else None
    v = value(agent.critic, ep, t, warped, B, tau)                             # (n,)
    with torch.no_grad():
        v_next = torch.cat([v[1:].detach(), v_end.detach().reshape(1)])        # V(o_{t+1}) (n,)
        G = td_lambda(w.reward.detach(), v_next, gamma, cfg_train.td_lambda)   # (n,)
    critic = ((v - G) / tau[t]).pow(2).mean()                                  # per-frame units
    return actor + critic, _info(w, agent, n, critic_loss=critic.detach(), value=((v.detach() - B[t]) / tau[t]).mean())


def warp_next(ep, w: Window) -> torch.Tensor:
    """warp(L^out_e, bw_{e+1}): the warped previous output of the observation after the window, with grad."""
    return warp(w.u.out[0, -1:], ep.clip.bw[w.e:w.e + 1])


# --------------------------------------------------------------------------- amortised refinement (DAgger)
@dataclass
class Labels:
    """The policy's own chain (its states) and the refined actions that label them."""

    u: Unroll                      # (1,T-1,...) the policy's mean actions and observations
    target: torch.Tensor           # (T-1,C,h,w) a*_t after ``refine_steps`` Adam steps
    terms: dict                    # the policy's own terms (T-1,) (before refinement), for the log
    queries: int
    seconds: float


def refine(env, ep, actions: torch.Tensor, agent, steps: int, lr: float, dual_lr: float = 0.0
           ) -> tuple[torch.Tensor, dict]:
    """``steps`` Adam steps on the actions (T-1,C,h,w) of a whole clip against r^L (open loop: each
    output is L_t + a_t), the multipliers ascending by ``dual_lr`` per step (0: fixed); returns
    (refined actions, the terms of the first rendering: the actions as given)."""
    delta = actions.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    first = None
    for _ in range(max(int(steps), 1)):                                        # 0 steps: the terms only
        S = render(env.stylizer, ep.base, ep.clip.L[1:] + delta)                 # (T-1,3,H,W)
        S = torch.cat([ep.base.images[:1].to(S), S]).clamp(0, 1)
        terms = env.reward.differentiable_terms(S, ep.frames, ep.flows, ep.base_terms, ep.reference, ep.loss_size)
        first = first or {k: v.detach() for k, v in terms.items()}
        if steps < 1:
            break
        opt.zero_grad(set_to_none=True)
        (-agent.reward(terms, ep.base_terms).mean()).backward()
        opt.step()
        if dual_lr > 0:
            agent.multipliers.ascend(terms, ep.base_terms, dual_lr)
    return delta.detach(), first


def distill_collect(policy, env, ep, agent: Agent, cfg_train) -> Labels:
    t0 = time.time()
    with torch.no_grad():
        u = unroll(policy, ep.clip, "mean")
    target, terms = refine(env, ep, u.actions[0], agent, cfg_train.refine_steps, cfg_train.refine_lr)
    return Labels(u, target, terms, cfg_train.refine_steps * ep.n_steps, time.time() - t0)


def distill_loss(policy, env, ep, lab: Labels, chunk: torch.Tensor, agent: Agent, cfg_train):
    """Regress the policy's mean at the states it visited onto the refined actions (mean squared error)."""
    warped = lab.u.warped[0, chunk] if lab.u.warped is not None else None
    mu = observe(policy, ep.clip, chunk + 1, warped).mean                      # (n,C,h,w)
    loss = (mu - lab.target[chunk]).pow(2).mean()
    base = {k: v[chunk] for k, v in ep.base_terms.items()}
    terms = {k: v[chunk] for k, v in lab.terms.items()}
    r = agent.reward(terms, base)[None]
    return loss, {"advantage": r - agent.reward(base, base), "reward": r, "ratio": torch.ones_like(r),
                  "terms": {k: v[None] for k, v in terms.items()}, "queries": 0, "finite_frames": True}


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Learner:
    name: str
    collect: Callable              # (policy, env, ep, agent, cfg_train) -> what the loss reads (no graph)
    loss: Callable                 # (policy, env, ep, batch, chunk, agent, cfg_train) -> (loss, info)
    critic: bool = False           # learns a value function beside the policy
    kind: str = "reward backpropagation"


LEARNERS = Registry("learner", "train.learner")
LEARNERS["reinforce"] = Learner("reinforce", lambda policy, env, ep, agent, c: rollout(policy, env, ep, 1),
                                score_function(baseline_advantage), kind="reinforcement learning (score function)")
LEARNERS["rloo"] = Learner("rloo", lambda policy, env, ep, agent, c: rollout(policy, env, ep, int(c.samples)),
                           score_function(leave_one_out_advantage), kind="reinforcement learning (score function)")
LEARNERS["pathwise"] = Learner("pathwise", lambda policy, env, ep, agent, c: Chain(), pathwise_loss)
LEARNERS["shac"] = Learner("shac", lambda policy, env, ep, agent, c: Chain(), shac_loss, critic=True,
                           kind="reinforcement learning (actor-critic, analytic policy gradient)")
LEARNERS["distill"] = Learner("distill", distill_collect, distill_loss, kind="amortised refinement (DAgger)")


def gradient_cosine(policy, env, ep, cfg, learner: str = "reinforce", samples: int = 32,
                    exact_samples: int = 8) -> float:
    """Signal-to-noise of a score-function learner: the cosine between its gradient estimate from
    ``samples`` rollouts of clip ``ep`` and the pathwise gradient of the same reward averaged over
    ``exact_samples`` draws (one chunk: the whole clip), over the mean's parameters (sigma
    excluded). ~1: the advantage carries the direction; ~0: noise."""
    params = [p for n, p in policy.named_parameters() if n != "log_sigma"]
    chunk = torch.arange(ep.n_steps, device=ep.clip.L.device)
    agent = Agent(cfg.override(train={"learner": "pathwise"}), policy)

    def grad(loss):
        g = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])

    exact = sum(grad(pathwise_loss(policy, env, ep, Chain(), chunk, agent, cfg.train)[0])
                for _ in range(exact_samples))
    est = grad(LEARNERS.pick(learner).loss(policy, env, ep, rollout(policy, env, ep, samples), chunk, agent,
                                           cfg.train)[0])
    return float(torch.nn.functional.cosine_similarity(exact, est, dim=0))


__all__ = ["LEARNERS", "Learner", "Agent", "Rollout", "Chain", "Window", "Labels", "rollout", "score_function",
           "act_window", "pathwise_loss", "shac_loss", "td_lambda", "baseline_return", "value", "refine",
           "distill_collect", "distill_loss", "baseline_advantage", "leave_one_out_advantage",
           "importance_weight", "gradient_cosine"]
