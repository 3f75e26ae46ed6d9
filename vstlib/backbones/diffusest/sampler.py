"""Deterministic DDIM (eta=0): inversion of clean latents to noise and sampling back.

Inversion runs on the sampling timesteps (``num_inversion_steps`` is merged into the sampling
grid, so every timestep sampling visits has its inverted latent), not on 1000 steps. The UNet is a
callback ``eps_fn(x, t) -> eps``: the pipeline puts guidance and feature injection there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vstlib.registry import Registry
from vstlib.runtime import progress

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]   # (n,4,h,w), timestep -> eps (n,4,h,w)


def ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Deterministic DDIM (eta=0) between noise levels alpha_bar ``a_from`` -> ``a_to``.

    Sampling moves to a larger alpha_bar, inversion to a smaller one; same formula.
    """
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * x0 + (1 - a_to) ** 0.5 * eps


@dataclass
class Inversion:
    """DDIM inversion of T images: VAE latent, latent at each sampling timestep, and x_T."""
    z: torch.Tensor                       # (T,4,h,w) VAE latent (x 0.18215)
    trajectory: dict                      # {timestep: (T,4,h,w)} for every sampling timestep
    xT: torch.Tensor                      # (T,4,h,w) = trajectory[max timestep]

    def select(self, idx) -> "Inversion":
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.z.device)
        return Inversion(self.z[idx], {t: x[idx] for t, x in self.trajectory.items()}, self.xT[idx])

    def tensors(self) -> dict:
        ts = sorted(self.trajectory)
        return {"z": self.z, "trajectory": torch.stack([self.trajectory[t] for t in ts]),
                "timesteps": torch.tensor(ts, dtype=torch.long)}

    @classmethod
    def from_tensors(cls, d: dict) -> "Inversion":
        traj = {int(t): x for t, x in zip(d["timesteps"].tolist(), d["trajectory"])}
        return cls(d["z"], traj, traj[max(traj)])


class DDIMSampler:
    """DDIM on a diffusers scheduler's noise levels: ``invert`` (clean -> x_T) and ``sample`` (x_T -> clean)."""

    def __init__(self, scheduler, num_inference_steps: int, num_inversion_steps: int):
        self.scheduler = scheduler
        scheduler.set_timesteps(num_inference_steps)
        self.timesteps = [int(t) for t in scheduler.timesteps]               # sampling, descending
        grid = set(self.timesteps)
        if num_inversion_steps != num_inference_steps:
            inv = scheduler.__class__.from_config(scheduler.config)
            inv.set_timesteps(num_inversion_steps)
            grid |= {int(t) for t in inv.timesteps if int(t) <= self.timesteps[0]}
        self.inversion_timesteps = sorted(grid)                               # ascending: clean -> noisy

    def alpha(self, t: int) -> float:
        """alpha_bar at timestep ``t`` (-1: the final, clean level)."""
        return float(self.scheduler.alphas_cumprod[t]) if t >= 0 else float(self.scheduler.final_alpha_cumprod)

    def prev(self, t: int) -> int:
        """The timestep a sampling step at ``t`` lands on (-1: the final, clean level)."""
        i = self.timesteps.index(t)
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def invert(self, x: torch.Tensor, eps_fn: EpsFn) -> dict:
        """Clean latents (n,4,h,w) -> {t: (n,4,h,w)} for every sampling timestep t."""
        keep, traj = set(self.timesteps), {}
        a_prev = self.alpha(-1)
        for t in progress(self.inversion_timesteps, desc="invert"):
            eps = eps_fn(x, t)                                   # eps at the target level, current latent
            x = ddim_move(x, eps, a_prev, self.alpha(t))
            a_prev = self.alpha(t)
            if t in keep:
                traj[t] = x
        return traj

    def sample(self, x: torch.Tensor, eps_fn: EpsFn) -> torch.Tensor:
        """x_T (n,4,h,w) -> clean latents (n,4,h,w); differentiable when grad is enabled."""
        for t in progress(self.timesteps, desc="denoise"):
            x = ddim_move(x, eps_fn(x, t), self.alpha(t), self.alpha(self.prev(t)))
        return x


class PNDMSampler(DDIMSampler):
    """BLIP-Diffusion's / DiffuseST's sampler: PNDM (PLMS, ``skip_prk_steps``) from x_T; the
    inversion stays DDIM, on the distinct sampling timesteps.

    PLMS visits one timestep twice (4 steps: [750, 500, 500, 250, 0]); ``timesteps`` lists each
    once (what the injection schedule and the inversion trajectory are keyed by: the reference
    latent at a noise level is the same for both visits), ``plms_timesteps`` the visits.
    """

    def __init__(self, scheduler, num_inference_steps: int, num_inversion_steps: int):
        self.scheduler, self.num_inference_steps = scheduler, num_inference_steps
        scheduler.set_timesteps(num_inference_steps)
        self.plms_timesteps = [int(t) for t in scheduler.timesteps]          # sampling visits, may repeat
        self.timesteps = sorted(set(self.plms_timesteps), reverse=True)      # distinct, descending
        grid = set(self.timesteps)
        if num_inversion_steps != num_inference_steps:
            inv = scheduler.__class__.from_config(scheduler.config)
            inv.set_timesteps(num_inversion_steps)
            grid |= {int(t) for t in inv.timesteps if int(t) <= self.timesteps[0]}
        self.inversion_timesteps = sorted(grid)

    def sample(self, x: torch.Tensor, eps_fn: EpsFn) -> torch.Tensor:
        # a fresh scheduler per call: PLMS keeps past eps in its state, which must not leak
        # between chunks, frames or renders
        sched = self.scheduler.__class__.from_config(self.scheduler.config)
        sched.set_timesteps(self.num_inference_steps)
        for t in progress(sched.timesteps, desc="denoise"):
            x = sched.step(eps_fn(x, int(t)), t, x).prev_sample
        return x


SAMPLERS = Registry("sampler", "backbone.sampler", {"ddim": DDIMSampler, "pndm": PNDMSampler})


__all__ = ["ddim_move", "Inversion", "DDIMSampler", "PNDMSampler", "SAMPLERS"]
