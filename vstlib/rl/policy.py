"""The latent policy: a small conv net that sees (previous, current) latents and proposes a residual
(and the critic of the actor-critic learner, on the same observation).

    dist = policy(prev_latent, cur_latent)      # Normal over (N, C, h, w)   (observation "pair")
    dist = policy(prev, cur, warped, visible)   # observation "flow": + warp(L^out_{t-1}) (N,C,h,w), mask (N,1,h,w)
    delta = dist.rsample()                      # added to the current frame's latent
    logp = log_prob(dist, delta)                # (N,), for REINFORCE

The mean starts tiny (a gate at sigmoid(5) ~ 0.993 scales it by ~0.0067) so that early
actions barely move DiffuseST's output; the gate and sigma are learned (sigma = exp(log_sigma):
log-parametrised, so no gradient step can make it negative).

``observation="flow"`` (beyond the paper) also feeds the previous OUTPUT latent warped along the
input video's flow and the visibility mask, so the policy sees what frame t must agree with.

``head`` picks how the mean is formed (still a Gaussian residual delta, so every learner applies):
- ``"residual"`` (the paper): mu = (1 - sigmoid(gate)) * raw(x);
- ``"blend"`` (beyond the paper; needs observation "flow"): a per-pixel gated blend toward the
  motion-compensated previous output plus a free residual,
  mu = v * sigmoid(o + blend_init) * (warp(L^out_{t-1}) - L_t) + (1 - sigmoid(gate)) * r,
  with (r, o) = raw(x) zero-initialised, so an untrained policy IS the latent blend with
  b = sigmoid(blend_init) (issue 11: the best training-free point; the learner moves away from it);
- ``"constant"`` (a reward-hacking control): mu = one learned offset per latent channel that never
  looks at the input.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Normal


def _conv_in(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    # InstanceNorm, not BatchNorm: a transition is one clip pair (batch 1), where batch statistics
    # are meaningless, and IN behaves the same in train and eval. affine=True (PyTorch's default is
    # False) gives back a learnable per-channel scale/shift, so the net can restore the latent
    # magnitude information that the normalisation removes.
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.InstanceNorm2d(cout, affine=True)]


class ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN, identity added, ReLU."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_in(ch, ch), nn.ReLU(inplace=True), *_conv_in(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class LatentPolicy(nn.Module):
    """Gaussian policy over latent residuals: mean from a conv net, one learned scalar sigma."""

    def __init__(self, latent_channels: int = 4, hidden: int = 16, gate_init: float = 5.0,
                 sigma_init: float = 0.1, observation: str = "pair", head: str = "residual",
                 blend_init: float = 0.0, first_kernel: int = 3):
        super().__init__()
        if sigma_init <= 0:
            raise ValueError(f"sigma_init must be > 0, got {sigma_init}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"unknown policy.observation {observation!r}; choose one of {OBSERVATIONS}")
        if head not in HEADS:
            raise ValueError(f"unknown policy.head {head!r}; choose one of {HEADS}")
        if head == "blend" and observation != "flow":
            raise ValueError("policy.head='blend' blends toward the warped previous output: it needs "
                             "policy.observation='flow'")
        c = latent_channels
        self.observation, self.head_kind, self.blend_init = observation, head, float(blend_init)
        if head == "constant":                                   # no trunk: it never sees the input
            self.offset = nn.Parameter(torch.zeros(1, c, 1, 1))
        else:
            cin = 2 * c if observation == "pair" else 3 * c + 1
            self.trunk = nn.Sequential(
                *_conv_in(cin, hidden, first_kernel), nn.ReLU(inplace=True),
                *_conv_in(hidden, hidden), nn.ReLU(inplace=True),
                ResidualBlock(hidden),
            )
            self.head = nn.Conv2d(hidden, c + (head == "blend"), 1)   # blend: + the gate logit o
            if head == "blend":                                  # start exactly at the latent blend
                nn.init.zeros_(self.head.weight)
            else:                                                # tiny raw mean at init (with the gate)
                nn.init.xavier_uniform_(self.head.weight, gain=0.01)
            nn.init.zeros_(self.head.bias)
        self.gate_param = nn.Parameter(torch.tensor(float(gate_init)))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)))  # sigma = exp(.) > 0

    @classmethod
    def from_config(cls, cfg_policy) -> "LatentPolicy":
        return cls(latent_channels=cfg_policy.latent_channels, hidden=cfg_policy.hidden,
                   gate_init=cfg_policy.gate_init, sigma_init=cfg_policy.sigma_init,
                   observation=cfg_policy.observation, head=cfg_policy.head, blend_init=cfg_policy.blend_init,
                   first_kernel=cfg_policy.first_kernel)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    @property
    def gate(self) -> torch.Tensor:
        return self.gate_param

    def forward(self, prev_latent: torch.Tensor, cur_latent: torch.Tensor,
                warped: torch.Tensor = None, visible: torch.Tensor = None) -> Normal:
        if prev_latent.shape != cur_latent.shape:
            raise ValueError(f"prev/cur latents differ in shape: {tuple(prev_latent.shape)} vs "
                             f"{tuple(cur_latent.shape)}")
        if self.head_kind == "constant":
            mu = self.offset.expand_as(cur_latent)               # (N, C, h, w), input ignored
            return Normal(mu, self.sigma.expand_as(mu))
        x = torch.cat([prev_latent, cur_latent], dim=1)         # (N, 2C, h, w)
        if self.observation == "flow":
            if warped is None or visible is None:
                raise ValueError("a policy with observation='flow' needs the warped previous output "
                                 "latent and the visibility mask")
            x = torch.cat([x, warped, visible], dim=1)          # (N, 3C+1, h, w)
        raw = self.head(self.trunk(x))                           # (N, C (+1), h, w)
        c = cur_latent.shape[1]
        mu = (1 - torch.sigmoid(self.gate_param)) * raw[:, :c]   # (N, C, h, w) the residual
        if self.head_kind == "blend":
            b = visible * torch.sigmoid(raw[:, c:] + self.blend_init)   # (N, 1, h, w) per-pixel blend
            mu = mu + b * (warped - cur_latent)                  # toward the warped previous output
        sigma = self.sigma.expand_as(mu)                         # (N, C, h, w)
        return Normal(mu, sigma)


class Critic(nn.Module):
    """The value of a state for an actor-critic (``learners`` "shac"): c(o_t), the mean per-frame reward
    the rest of the episode earns beyond the per-frame stylization's, from the same observation as
    the policy (conv net, global average pool, linear; zero-initialised: it starts at "as good as the
    baseline"). The learner turns it into V(o_t) = B_t + tau_t c(o_t) with the baseline's known return
    B_t and the (discounted) number of frames left tau_t, so the net only learns an O(1) excess."""

    def __init__(self, latent_channels: int, hidden: int = 32, observation: str = "flow"):
        super().__init__()
        c = latent_channels
        self.observation = observation
        cin = 2 * c if observation == "pair" else 3 * c + 1
        self.trunk = nn.Sequential(*_conv_in(cin, hidden), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, prev_latent, cur_latent, warped=None, visible=None) -> torch.Tensor:
        x = torch.cat([prev_latent, cur_latent], dim=1)          # (N, 2C, h, w)
        if self.observation == "flow":
            x = torch.cat([x, warped, visible], dim=1)           # (N, 3C+1, h, w)
        return self.out(self.trunk(x).mean((-2, -1))).squeeze(-1)   # (N,)


OBSERVATIONS = ("pair", "flow")
HEADS = ("residual", "blend", "constant")


def log_prob(dist: Normal, action: torch.Tensor) -> torch.Tensor:
    """Log-density of a latent residual, summed over C, H, W: (N,)."""
    return dist.log_prob(action).flatten(1).sum(1)


__all__ = ["LatentPolicy", "Critic", "OBSERVATIONS", "HEADS", "ResidualBlock", "log_prob"]
