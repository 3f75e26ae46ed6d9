"""Episodes and rollouts of the latent policy (Section 3 of the paper).

An *episode* is one clip. At step t = 1..T-1 the observation is the pair of **baseline**
latents (L_{t-1}, L_t) of frames t-1 and t (DiffuseST's own latents, at the configured
injection point ``z0`` or ``xT``); the action is a residual delta ~ N(mu, sigma^2) added to L_t;
the stylized frame is S_t = render(L_t + delta). S_0 is the baseline frame 0, so every clip
starts fresh. The reward of S_t is

    r_t = -(w_style * style(S_t) + w_content * content(S_t, I_t) + w_temp * temporal(S_{t-1}, S_t))

(``rewards.weighted_reward``); the trainer's REINFORCE update uses the advantage
A_t = r_t - r_t^baseline (the same terms on DiffuseST's frames), see ``train.reinforce_loss``.

Observations never depend on earlier actions, so a whole clip is rolled out in one batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vstlib import clips
from vstlib.utils import InputError, fork_rng, resolve_device

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

    @property
    def n_steps(self) -> int:
        return self.obs.shape[0] - 1


@dataclass
class Transitions:
    """One rollout of a clip: T-1 transitions, batched."""

    actions: torch.Tensor         # (T-1,4,h,w) residual deltas, no grad
    stylized: torch.Tensor        # (T,3,H,W) S_0 (baseline) then S_1..S_{T-1}
    terms: dict                   # policy frames: each reward term and "reward", (T-1,) each
    base_terms: dict              # baseline frames: same keys (T-1,) each


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
        style = clips.load_style(cfg.profile).to(device)                       # (1,3,S,S)
        base = stylizer.stylize(frames, style)                                 # images (T,3,H,W)
        if base.images.shape[-2:] != frames.shape[-2:]:
            raise InputError(f"clip {clip_id!r} frames are {tuple(frames.shape[-2:])} but the backbone "
                             f"renders {tuple(base.images.shape[-2:])}; flows and rewards need one size",
                             fix="set data.size equal to backbone.resolution")
        # contiguous: fresh backbone outputs are channels_last, cached ones are not, and conv
        # results differ in the last bits between layouts (a resumed run must match exactly)
        base.images = base.images.float().contiguous()                        # (T,3,H,W)
        obs = stylizer.policy_latents(base).float().contiguous()               # (T,4,h,w)
        base_terms = reward_model.terms(base.images, frames, flows)           # (T-1,) each
    return Episode(clip_id, frames, flows, base, obs, {k: v.detach() for k, v in base_terms.items()})


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
    from vstlib.rewards import RewardModel

    device = torch.device(device)
    with fork_rng(device):
        torch.manual_seed(CRITIC_SEED)
        return RewardModel.from_config(cfg_reward, style.to(device), device)


def make_env(cfg, device=None):
    """The fixed parts of the environment: (stylizer, reward_model, style image (1,3,S,S)).

    Built from fixed seeds under ``fork_rng``: training, evaluation and every run judge with
    the same networks, and the training RNG stream is untouched.
    """
    device = resolve_device(device if device is not None else cfg.train.device)
    style = clips.load_style(cfg.profile).to(device)                           # (1,3,S,S)
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
def policy_frames(policy, stylizer, base) -> torch.Tensor:
    """Stylize a clip with the policy's MEAN action (evaluation, ``vst stylize``)."""
    L = stylizer.policy_latents(base).float().contiguous()                     # (T,4,h,w)
    dist = policy(L[:-1], L[1:])                                               # over (T-1,4,h,w)
    return render_actions(stylizer, base, L, dist.mean)                        # (T,3,H,W)


@torch.no_grad()
def rollout(policy, ep: Episode, stylizer, reward_model, deterministic: bool = False) -> Transitions:
    """Roll the policy out over one clip, all T-1 steps in one batch (data only, no graph)."""
    L = ep.obs                                                                 # (T,4,h,w)
    dist = policy(L[:-1], L[1:])                                               # N(mu, sigma^2) over (T-1,4,h,w)
    a = dist.mean if deterministic else dist.rsample()                         # (T-1,4,h,w)
    # REINFORCE is a score-function estimator: the sample is a constant for log pi
    # (with a reparametrised sample, a - mu = sigma * eps would cancel mu's gradient).
    a = a.detach()
    stylized = render_actions(stylizer, ep.base, L, a)                         # (T,3,H,W)
    terms = {k: v.detach() for k, v in reward_model.terms(stylized, ep.frames, ep.flows).items()}
    return Transitions(a, stylized, terms, ep.base_terms)


__all__ = ["Episode", "Transitions", "make_env", "make_stylizer", "make_reward_model", "build_episode",
           "rollout", "render_actions", "policy_frames", "CRITIC_SEED"]
