"""The environment: the frozen stylizer and reward, episodes (one clip each) and training windows.

An episode holds everything about a clip that never changes during training: the frames I_t,
the flows and occlusion masks of the ORIGINAL frames, the stylizer's per-frame output and its
latents L_t (a ``step.LatentClip``, with the input's flow on the latent grid), and the
per-frame baseline's reward terms (the normalised reward divides by them). Building an episode
or a window never moves the training RNG (``fork_rng``), so a resumed run samples exactly the
actions of an uninterrupted one; what is expensive and fixed is disk-cached by content.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vstlib import cache, paths
from vstlib.backbones import make_backbone
from vstlib.errors import InputError
from vstlib.flow import inside_mask, latent_flow
from vstlib.rl.rewards import RewardModel, weighted_reward
from vstlib.rl.step import LatentClip
from vstlib.runtime import fork_rng
from vstlib.video import clips

CRITIC_SEED = 0  # random smoke critics (VGG, LPIPS trunk) are the same networks in every run


@dataclass
class Env:
    """The fixed parts of the environment, built once per process and shared by every run."""

    stylizer: object               # backbones.Backbone
    reward: RewardModel            # the frozen critics and the weighted sum
    style: torch.Tensor            # (1,3,Hs,Ws) the style image R
    device: torch.device


def make_env(cfg, style: Optional[torch.Tensor] = None) -> Env:
    """The stylizer ``cfg.backbone`` names and the reward ``cfg.reward`` for the profile's style image
    (or ``style`` (1,3,Hs,Ws): the evaluation's unseen styles), built from fixed seeds under
    ``fork_rng`` (training, evaluation and every run judge with the same networks; the caller's RNG
    stream is untouched), on ``cfg.train.device``."""
    device = torch.device(cfg.train.device)
    style = (clips.load_style(cfg.profile) if style is None else style).to(device)   # (1,3,Hs,Ws)
    with fork_rng(device):
        torch.manual_seed(cfg.backbone.seed)
        stylizer = make_backbone(cfg.backbone, device, paths.cache_dir(cfg.profile) / "backbone")
        torch.manual_seed(CRITIC_SEED)
        reward = RewardModel.from_config(cfg.reward, style, device)
    return Env(stylizer, reward, style, device)


@dataclass
class Episode:
    """One clip (or a window of it) in the environment."""

    clip_id: str
    frames: torch.Tensor          # (T,3,H,W) original frames I_t in [0,1]
    flows: dict                   # fw, bw (T-1,2,H,W); mask_fw, mask_bw (T-1,1,H,W) of the ORIGINAL frames
    base: object                  # backbones.BaselineOutput: images (T,3,H,W) (+ the backbone's own fields)
    clip: LatentClip              # the stylizer's latents L_t and the input's flow on their grid
    base_terms: dict = field(default_factory=dict)   # the baseline's "style","content","temporal","reward": (T-1,)
    loss_size: Optional[int] = None   # a window's: the short side its terms are computed at, so that it is
                                      # scored at its whole frame's scale (None: reward.loss_size)

    @property
    def n_steps(self) -> int:
        return self.clip.n_frames - 1

    @property
    def reference(self) -> torch.Tensor:
        """N(I_t) (T,3,H,W): the stylizer's own frames, before a latent round trip where it has one."""
        pf = getattr(self.base, "per_frame", None)
        return (pf if pf is not None else self.base.images).float()


@torch.no_grad()
def build_episode(cfg, clip_id: str, env: Env) -> Episode:
    """A prepared clip, its flows, the stylizer's output and the baseline's reward terms."""
    device = env.device
    with fork_rng(device):
        frames = clips.load_clip(cfg.profile, clip_id).to(device)              # (T,3,H,W)
        if frames.shape[0] < 2:
            raise InputError(f"clip {clip_id!r} has {frames.shape[0]} frame(s); an episode needs 2+",
                             fix="re-run `vst prepare` with data.n_frames >= 2")
        flows = {k: v.to(device) for k, v in clips.clip_flows(cfg, clip_id, frames, device).items()}
        base = env.stylizer.stylize(frames, env.style)                         # images (T,3,H,W)
        if base.images.shape[-2:] != frames.shape[-2:]:
            raise InputError(f"clip {clip_id!r} frames are {tuple(frames.shape[-2:])} but the backbone "
                             f"renders {tuple(base.images.shape[-2:])}; flows and rewards need one size",
                             fix="set data.size equal to backbone.resolution")
        # contiguous: fresh backbone outputs are channels_last, cached ones are not, and conv
        # results differ in the last bits between layouts (a resumed run must match exactly)
        base.images = base.images.float().contiguous()                        # (T,3,H,W)
        L = env.stylizer.policy_latents(base).float().contiguous()             # (T,C,h,w)
        ref = base.per_frame.float() if getattr(base, "per_frame", None) is not None else base.images
        terms = baseline_terms(cfg, clip_id, base.images, frames, flows, env, ref)
    return Episode(clip_id, frames, flows, base, LatentClip(L, *latent_flow(flows, *L.shape[-2:])), terms)


def baseline_terms(cfg, clip_id: str, images, frames, flows: dict, env: Env, reference=None) -> dict:
    """The baseline's reward terms of a whole clip, (T-1,) each, disk-cached: every run, evaluation
    and figure builds the same episodes, and these terms (a perceptual network on every frame) cost
    as much as a policy's decode. Keyed by the frames, the baseline's frames, the style image and
    the flow and reward config."""
    digest = cache.content_hash({"frames": frames, "images": images, "style": env.style,
                                 **({} if reference is None else {"reference": reference})})
    key = cache.key(_term_config(cfg.reward), cfg.flow, digest, 1)
    path = paths.ensure(paths.cache_dir(cfg.profile) / "terms") / f"{clip_id}-{key}.safetensors"
    return cached_terms(path, f"baseline reward terms of {clip_id}", images, frames, flows, env.reward, reference)


def _term_config(cfg_reward) -> dict:
    """What the cached terms depend on: not the weights or constraints (they only combine the terms)."""
    d = {k: v for k, v in cfg_reward.__dict__.items() if k not in ("w_style", "w_content", "w_temp", "weights",
                                                                    "constraints", "hinge")}
    return d


@torch.no_grad()
def cached_terms(path: Path, what: str, images, frames, flows: dict, reward: RewardModel, reference=None,
                 loss_size: Optional[int] = None) -> dict:
    """``reward.terms(images, frames, flows, reference=reference)``, (T-1,) each, from the validated cache
    file ``path`` (computed and written when absent, damaged or of another clip length)."""
    def build():
        return {k: v.cpu() for k, v in reward.terms(images, frames, flows, reference=reference,
                                                    loss_size=loss_size).items()}

    terms = cache.cached_tensors(path, build, what, expect=("reward", *reward.names))
    if any(v.shape != (frames.shape[0] - 1,) for v in terms.values()):        # a clashing key
        path.unlink(missing_ok=True)
        terms = build()
    terms["reward"] = weighted_reward(terms, reward.cfg_reward, terms)        # the key leaves the weights out
    return {k: v.to(frames.device) for k, v in terms.items()}


# --------------------------------------------------------------------------- training windows
@torch.no_grad()
def crop_episode(ep: Episode, box: tuple, reward: RewardModel, cache_dir=None) -> Episode:
    """The episode on a window ``box`` = (y, x, h, w) in latent cells (decoding cost is linear in
    pixels). Flows keep their values (pixel displacements); a pixel whose correspondence leaves the
    window is masked out, and the baseline's reward terms are recomputed on the window (disk-cached
    in ``cache_dir`` by the window's content: the runs of one seed visit the same windows)."""
    y, x, h, w = box
    f = ep.frames.shape[-1] // ep.clip.L.shape[-1]                              # pixels per latent cell
    size = window_loss_size(reward.cfg_reward.loss_size, ep.frames.shape[-2:], (h * f, w * f))
    px = (..., slice(y * f, (y + h) * f), slice(x * f, (x + w) * f))
    frames = ep.frames[px].contiguous()                                        # (T,3,hf,wf)
    flows = {k: ep.flows[k][px].contiguous() for k in ("fw", "bw", "mask_fw", "mask_bw")}
    flows["mask_fw"] = flows["mask_fw"] * inside_mask(flows["fw"]).to(flows["mask_fw"])
    flows["mask_bw"] = flows["mask_bw"] * inside_mask(flows["bw"]).to(flows["mask_bw"])
    base = ep.base.crop(box, f)
    L = ep.clip.L[..., y:y + h, x:x + w].contiguous()                          # (T,C,h,w)
    ref = getattr(base, "per_frame", None)
    ref = base.images if ref is None else ref.float()
    if cache_dir is None:
        terms = reward.terms(base.images, frames, flows, reference=ref, loss_size=size)
    else:
        key = cache.key(_term_config(reward.cfg_reward), size,
                        cache.content_hash({"images": base.images, "frames": frames, "reference": ref, **flows}), 2)
        path = paths.ensure(Path(cache_dir)) / f"{ep.clip_id}-window-{key}.safetensors"
        terms = cached_terms(path, f"window baseline terms of {ep.clip_id}", base.images, frames, flows, reward, ref,
                             size)
    return Episode(ep.clip_id, frames, flows, base, LatentClip(L, *latent_flow(flows, h, w)),
                   {k: v.detach() for k, v in terms.items()}, size)


def window_loss_size(loss_size: int, full_hw: tuple, window_hw: tuple) -> int:
    """The short side a window's terms are computed at so that it is seen at its whole frame's scale:
    the whole frame's short side goes to ``loss_size``, the window's by the same factor (0: as rendered)."""
    if loss_size <= 0:
        return 0
    return max(1, round(min(window_hw) * loss_size / min(full_hw)))


def random_box(ep: Episode, size: int, seed: tuple) -> tuple:
    """A window of ``size`` x ``size`` latent cells, uniform over the clip, from its own RNG (a
    resumed run crops the same windows); the whole latent when ``size`` is 0 or too large."""
    H, W = ep.clip.L.shape[-2:]
    if size <= 0 or (size >= H and size >= W):
        return (0, 0, H, W)
    h, w = min(size, H), min(size, W)
    rng = np.random.default_rng(list(seed))
    return (int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w)


__all__ = ["Env", "make_env", "Episode", "build_episode", "baseline_terms", "cached_terms", "crop_episode",
           "random_box", "window_loss_size", "CRITIC_SEED"]
