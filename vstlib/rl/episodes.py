"""Episodes and rollouts of the latent policy (Section 3 of the paper).

An *episode* is one clip. At step t = 1..T-1 the observation is the pair of **baseline**
latents (L_{t-1}, L_t) of frames t-1 and t (DiffuseST's own latents, at the configured
injection point ``z0`` or ``xT``); the action is a residual delta ~ N(mu, sigma^2) added to L_t;
the stylized frame is S_t = render(L_t + delta). S_0 is the baseline frame 0, so every clip
starts fresh. The reward of S_t is

    r_t = -(w_style * style(S_t) + w_content * content(S_t, I_t) + w_temp * temporal(S_{t-1}, S_t))

(``rewards.weighted_reward``); the learners (``vstlib.rl.learners``) turn rollouts into updates.

With ``policy.observation="pair"`` observations never depend on earlier actions, so a whole clip
is rolled out in one batch. With ``"flow"`` the policy also sees the previous OUTPUT latent
L^out_{t-1} = L_{t-1} + delta_{t-1} warped along the input's backward flow (downsampled to the
latent grid) and the visibility mask: the rollout is then sequential over t (rendering is still
batched afterwards, as the observation is in latent space). ``samples=K`` rolls out K independent
episodes of the clip at once (RLOO's group).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from vstlib.errors import InputError
from vstlib.runtime import fork_rng, resolve_device
from vstlib.video import clips

CRITIC_SEED = 0  # random smoke critics (VGG, LPIPS trunk) are the same networks in every run


@dataclass
class Episode:
    """Everything about one clip that does not change during training (built once per run)."""

    clip_id: str
    frames: torch.Tensor          # (T,3,H,W) original frames I_t in [0,1]
    flows: dict                   # fw, bw (T-1,2,H,W); mask_fw, mask_bw (T-1,1,H,W) of the ORIGINAL frames
    base: object                  # backbones.BaselineOutput: images (T,3,H,W) (+ the backbone's own fields)
    obs: torch.Tensor             # (T,4,h,w) baseline latents L_t at the injection point
    base_terms: dict = field(default_factory=dict)  # "style","content","temporal","reward": (T-1,) each
    lat_bw: torch.Tensor = None   # (T-1,2,h,w) backward flow (frame t -> t-1) on the latent grid, latent px
    lat_mask: torch.Tensor = None  # (T-1,1,h,w) share of frame t's latent cell visible in frame t-1

    @property
    def n_steps(self) -> int:
        return self.obs.shape[0] - 1


@dataclass
class Transitions:
    """K rollouts of a clip: K x (T-1) transitions, batched (K = 1 for REINFORCE)."""

    actions: torch.Tensor         # (K,T-1,C,h,w) residual deltas, no grad
    logp: torch.Tensor            # (K,T-1) log pi(a) under the weights that sampled them
    extra: Optional[torch.Tensor]  # (K,T-1,C+1,h,w) warped previous output latent + mask ("flow"), or None
    stylized: Optional[torch.Tensor]  # (K,T,3,H,W) S_0 (baseline) then S_1..S_{T-1}; None unrendered
    terms: Optional[dict]         # policy frames: each reward term and "reward", (K,T-1) each; None unrendered
    base_terms: dict              # baseline frames: same keys (T-1,) each
    rendered: dict = field(default_factory=dict)  # frame index -> (1,3,H,W) frame a learner rendered in
                                                  # this visit (detached): the pathwise learner's next S_{s-1}


def latent_flow(flows: dict, h: int, w: int) -> tuple:
    """The input's backward flow and visibility on the latent grid: (bw (T-1,2,h,w), mask (T-1,1,h,w)).

    Area-averaged to (h, w); the displacement is divided by the downsampling factor of each axis
    (a move of 8 pixels is one latent cell at factor 8).
    """
    bw, mask = flows["bw"].float(), flows["mask_bw"].float()                    # (T-1,2,H,W), (T-1,1,H,W)
    H, W = bw.shape[-2:]
    lat = F.interpolate(bw, size=(h, w), mode="area")                          # (T-1,2,h,w)
    lat = torch.stack([lat[:, 0] * (w / W), lat[:, 1] * (h / H)], dim=1)      # x by w/W, y by h/H
    return lat.contiguous(), F.interpolate(mask, size=(h, w), mode="area").contiguous()


def policy_dist(policy, ep: "Episode", idx: torch.Tensor, extra: Optional[torch.Tensor] = None):
    """pi(. | observation of transitions ``idx`` (n,)) (frames idx+1); extra (n,C+1,h,w) or None."""
    if extra is None:
        return policy(ep.obs[idx], ep.obs[idx + 1])                             # over (n,C,h,w)
    C = ep.obs.shape[1]
    return policy(ep.obs[idx], ep.obs[idx + 1], extra[:, :C], extra[:, C:])


def _to(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


@torch.no_grad()
def build_episode(cfg, clip_id: str, stylizer, reward_model, device=None) -> Episode:
    """Load a prepared clip, its flows, DiffuseST's output and the baseline's reward terms.

    Runs under ``fork_rng``: building (or not building, when cached) an episode never moves
    the training RNG, so a resumed run samples exactly the actions of an uninterrupted one.
    """
    device = torch.device(device) if device is not None else _device_of(reward_model, stylizer)
    with fork_rng(device):
        frames = clips.load_clip(cfg.profile, clip_id).to(device)              # (T,3,H,W)
        if frames.shape[0] < 2:
            raise InputError(f"clip {clip_id!r} has {frames.shape[0]} frame(s); an episode needs 2+",
                             fix="re-run `vst prepare` with data.n_frames >= 2")
        flows = _to(clips.clip_flows(cfg, clip_id, frames, device), device)   # (T-1,...) each
        style = clips.load_style(cfg.profile).to(device)                       # (1,3,Hs,Ws)
        base = stylizer.stylize(frames, style)                                 # images (T,3,H,W)
        if base.images.shape[-2:] != frames.shape[-2:]:
            raise InputError(f"clip {clip_id!r} frames are {tuple(frames.shape[-2:])} but the backbone "
                             f"renders {tuple(base.images.shape[-2:])}; flows and rewards need one size",
                             fix="set data.size equal to backbone.resolution")
        # contiguous: fresh backbone outputs are channels_last, cached ones are not, and conv
        # results differ in the last bits between layouts (a resumed run must match exactly)
        base.images = base.images.float().contiguous()                        # (T,3,H,W)
        obs = stylizer.policy_latents(base).float().contiguous()               # (T,4,h,w)
        base_terms = baseline_terms(cfg, clip_id, base.images, frames, flows, style, reward_model)
        lat_bw, lat_mask = latent_flow(flows, *obs.shape[-2:])                 # (T-1,2|1,h,w)
    return Episode(clip_id, frames, flows, base, obs, {k: v.detach() for k, v in base_terms.items()},
                   lat_bw, lat_mask)


@torch.no_grad()
def baseline_terms(cfg, clip_id: str, images, frames, flows: dict, style, reward_model) -> dict:
    """The baseline's reward terms of a whole clip, (T-1,) each, disk-cached: every training run,
    evaluation and figure builds the same episodes, and on the cpu profile these terms (the
    perceptual network on 20 frames) cost as much as a policy's decode. Keyed by what they are
    computed from: the frames, the baseline's frames, the style image, the flow and reward config."""
    from vstlib import cache, paths

    digest = cache.content_hash({"frames": frames, "images": images, "style": style})
    key = cache.key(cfg.reward, cfg.flow, digest, 1)
    path = paths.ensure(paths.cache_dir(cfg.profile) / "terms") / f"{clip_id}-{key}.safetensors"
    return _cached_terms(path, f"baseline reward terms of {clip_id}", images, frames, flows, reward_model)


def _cached_terms(path: Path, what: str, images, frames, flows: dict, reward_model) -> dict:
    """``reward_model.terms(images, frames, flows)``, (T-1,) each, from the validated cache file
    ``path`` (computed and written when absent, damaged or of another clip length)."""
    from vstlib import cache

    def build():
        return {k: v.cpu() for k, v in reward_model.terms(images, frames, flows).items()}

    terms = cache.cached_tensors(path, build, what, expect=("reward", *reward_model.names))
    if any(v.shape != (frames.shape[0] - 1,) for v in terms.values()):                # a clashing key
        path.unlink(missing_ok=True)
        terms = build()
    return {k: v.to(frames.device) for k, v in terms.items()}


@torch.no_grad()
def crop_episode(ep: Episode, box: tuple, reward_model, cache_dir=None) -> Episode:
    """The episode on a window ``box`` = (y, x, h, w) in latent cells (training on random crops:
    decoding cost is linear in pixels). Flows keep their values (pixel displacements); a pixel
    whose correspondence leaves the window is masked out, and the baseline's reward terms are
    recomputed on the window (the normalised reward divides by them). ``cache_dir``: keep those
    terms on disk, keyed by the window's content and the reward config (runs of one seed, e.g.
    the paper's learner and the controls beside the main run, visit the same windows)."""
    from vstlib.flow import inside_mask

    y, x, h, w = box
    f = ep.frames.shape[-1] // ep.obs.shape[-1]                                # pixels per latent cell
    px = (..., slice(y * f, (y + h) * f), slice(x * f, (x + w) * f))
    frames = ep.frames[px].contiguous()                                        # (T,3,hf,wf)
    flows = {k: ep.flows[k][px].contiguous() for k in ("fw", "bw", "mask_fw", "mask_bw")}
    flows["mask_fw"] = flows["mask_fw"] * inside_mask(flows["fw"]).to(flows["mask_fw"])
    flows["mask_bw"] = flows["mask_bw"] * inside_mask(flows["bw"]).to(flows["mask_bw"])
    base = ep.base.crop(box, f)
    obs = ep.obs[..., y:y + h, x:x + w].contiguous()                          # (T,C,h,w)
    base_terms = _window_terms(ep.clip_id, base.images, frames, flows, reward_model, cache_dir)  # (T-1,) each
    lat_bw, lat_mask = latent_flow(flows, h, w)
    return Episode(ep.clip_id, frames, flows, base, obs, {k: v.detach() for k, v in base_terms.items()},
                   lat_bw, lat_mask)


def _window_terms(clip_id: str, images, frames, flows: dict, reward_model, cache_dir=None) -> dict:
    """``reward_model.terms`` of the baseline on a window, disk-cached in ``cache_dir`` if given."""
    from vstlib import cache, paths

    if cache_dir is None:
        return reward_model.terms(images, frames, flows)
    digest = cache.content_hash({"images": images, "frames": frames, **flows})
    key = cache.key(reward_model.cfg_reward, digest, 1)
    path = paths.ensure(Path(cache_dir)) / f"{clip_id}-window-{key}.safetensors"
    return _cached_terms(path, f"window baseline terms of {clip_id}", images, frames, flows, reward_model)


def random_box(ep: Episode, size: int, seed: tuple) -> tuple:
    """A window of ``size`` x ``size`` latent cells, uniform over the clip, from its own RNG (a
    resumed run crops the same windows); the whole latent when ``size`` is 0 or too large."""
    import numpy as np

    H, W = ep.obs.shape[-2:]
    if size <= 0 or (size >= H and size >= W):
        return (0, 0, H, W)
    h, w = min(size, H), min(size, W)
    rng = np.random.default_rng(list(seed))
    return (int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w)


def make_stylizer(cfg, device):
    """The backbone ``cfg.backbone.name`` names (vstlib.backbones), built under ``backbone.seed``.

    Its disk cache lives in ``.cache/<profile>/backbone``.
    """
    from vstlib import paths
    from vstlib.backbones import make_backbone

    device = torch.device(device)
    with fork_rng(device):
        torch.manual_seed(cfg.backbone.seed)
        return make_backbone(cfg.backbone, device, paths.cache_dir(cfg.profile) / "backbone")


def make_reward_model(cfg_reward, style: torch.Tensor, device):
    """The frozen critics; random smoke critics are always the same networks (CRITIC_SEED)."""
    from vstlib.rl.rewards import RewardModel

    device = torch.device(device)
    with fork_rng(device):
        torch.manual_seed(CRITIC_SEED)
        return RewardModel.from_config(cfg_reward, style.to(device), device)


def make_env(cfg, device=None):
    """The fixed parts of the environment: (stylizer, reward_model, style image (1,3,Hs,Ws)).

    Built from fixed seeds under ``fork_rng``: training, evaluation and every run judge with
    the same networks, and the training RNG stream is untouched.
    """
    device = resolve_device(device if device is not None else cfg.train.device)
    style = clips.load_style(cfg.profile).to(device)                           # (1,3,Hs,Ws)
    return make_stylizer(cfg, device), make_reward_model(cfg.reward, style, device), style


def _device_of(*objs) -> torch.device:
    for obj in objs:
        dev = getattr(obj, "device", None)
        if dev is not None:
            return torch.device(dev)
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                return p.device
    return torch.device("cpu")


def render_actions(stylizer, ep_base, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """S_1..S_{T-1} = render(L_t + delta_t); S_0 = the baseline frame 0.  -> (T,3,H,W)."""
    T = obs.shape[0]
    idx = torch.arange(1, T, device=obs.device)                                # (T-1,)
    S = stylizer.render(obs[1:] + actions.detach(), ep_base, idx).float()      # (T-1,3,H,W)
    return torch.cat([ep_base.images[:1].to(S), S], dim=0).contiguous()       # (T,3,H,W)


@torch.no_grad()
def act(policy, L: torch.Tensor, lat_bw: Optional[torch.Tensor], lat_mask: Optional[torch.Tensor],
        samples: int = 1, deterministic: bool = False):
    """Sample K action sequences for a clip of latents L (T,C,h,w) (no graph).

    Returns (actions (K,T-1,C,h,w), logp (K,T-1), extra (K,T-1,C+1,h,w) or None).
    REINFORCE is a score-function estimator: the sample is a constant for log pi (with a
    reparametrised sample, a - mu = sigma * eps would cancel mu's gradient), hence no graph here.
    """
    from vstlib.flow import warp
    from vstlib.rl.policy import log_prob

    K, n = samples, L.shape[0] - 1
    if getattr(policy, "observation", "pair") == "pair":                       # batched over t
        dist = policy(L[:-1], L[1:])                                           # over (T-1,C,h,w)
        a = dist.mean[None] if deterministic else dist.rsample((K,))           # (K,T-1,C,h,w)
        if deterministic and K > 1:
            a = a.expand(K, *a.shape[1:])
        logp = torch.stack([log_prob(dist, a[k]) for k in range(K)])           # (K,T-1)
        return a.contiguous(), logp, None
    acts, logps, extras = [], [], []
    out_prev = L[:1].expand(K, *L.shape[1:])                                   # (K,C,h,w) L^out_0 = L_0
    for t in range(1, n + 1):                                                  # sequential: obs needs a_{t-1}
        warped = warp(out_prev, lat_bw[t - 1:t].expand(K, -1, -1, -1))        # (K,C,h,w)
        vis = lat_mask[t - 1:t].expand(K, -1, -1, -1)                          # (K,1,h,w)
        dist = policy(L[t - 1:t].expand_as(warped), L[t:t + 1].expand_as(warped), warped, vis)
        a = dist.mean if deterministic else dist.sample()                      # (K,C,h,w)
        acts.append(a)
        logps.append(log_prob(dist, a))                                        # (K,)
        extras.append(torch.cat([warped, vis], dim=1))                         # (K,C+1,h,w)
        out_prev = L[t:t + 1] + a                                              # (K,C,h,w)
    return torch.stack(acts, 1), torch.stack(logps, 1), torch.stack(extras, 1)


@torch.no_grad()
def policy_frames(policy, stylizer, base, flows: Optional[dict] = None) -> torch.Tensor:
    """Stylize a clip with the policy's MEAN action (evaluation, ``vst stylize``).

    ``flows`` (the input's, as in an Episode) is needed by a policy with observation "flow".
    """
    L = stylizer.policy_latents(base).float().contiguous()                     # (T,4,h,w)
    lat_bw = lat_mask = None
    if getattr(policy, "observation", "pair") == "flow":
        if flows is None:
            raise ValueError("a policy with observation='flow' needs the clip's flows")
        lat_bw, lat_mask = latent_flow({k: v.to(L.device) for k, v in flows.items()}, *L.shape[-2:])
    a, _, _ = act(policy, L, lat_bw, lat_mask, deterministic=True)             # (1,T-1,4,h,w)
    return render_actions(stylizer, base, L, a[0])                             # (T,3,H,W)


@torch.no_grad()
def rollout(policy, ep: Episode, stylizer, reward_model, deterministic: bool = False,
            samples: int = 1, render: bool = True) -> Transitions:
    """Roll the policy out over one clip K = ``samples`` times (data only, no graph).

    ``render=False`` samples the actions (and the flow observations) only: the pathwise learner
    renders and scores its own chunks with grad, so decoding here would be wasted work.
    """
    a, logp, extra = act(policy, ep.obs, ep.lat_bw, ep.lat_mask, samples, deterministic)
    if not render:
        return Transitions(a, logp, extra, None, None, ep.base_terms)
    stylized, terms = [], []
    for k in range(samples):                                                   # one clip per sample
        S = render_actions(stylizer, ep.base, ep.obs, a[k])                    # (T,3,H,W)
        # a NaN/inf rendered frame (a diverging decoder) must not abort training: score the baseline
        # frame in its place, then mark every transition touching it NaN so the update is skipped
        bad = ~torch.isfinite(S).flatten(1).all(1)                             # (T,)
        scored = torch.where(bad[:, None, None, None], ep.base.images.to(S), S)
        t = reward_model.terms(scored, ep.frames, ep.flows, ep.base_terms)
        if bad.any():
            hit = bad[1:] | bad[:-1]                                           # (T-1,) transitions t-1 -> t
            t = {key: v.masked_fill(hit, float("nan")) for key, v in t.items()}
        stylized.append(S)
        terms.append(t)
    terms = {key: torch.stack([t[key].detach() for t in terms]) for key in terms[0]}  # (K,T-1) each
    return Transitions(a, logp, extra, torch.stack(stylized), terms, ep.base_terms)


__all__ = ["Episode", "Transitions", "make_env", "make_stylizer", "make_reward_model", "build_episode",
           "rollout", "render_actions", "policy_frames", "act", "policy_dist", "latent_flow", "crop_episode",
           "random_box", "CRITIC_SEED"]
