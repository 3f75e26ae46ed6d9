"""The independent evaluation: every method on the held-out clips, in the trained style and in styles
it never saw, judged by measures it never optimised (Lai et al. 2018's protocol).

    per_clip, summary = evaluate_methods(cfg)   # results/<profile>/eval_per_clip.csv, eval_summary.csv

A row is one method x setting x seed x clip x style. Its measures (``MEASURES``): the warping error
(Lai et al.'s definition and occlusion test) along the method's own flow (DIS, what the policy sees:
``warp_dis``) and along a flow it never uses (Farneback: ``warp_indep``), the long-term warping error
between frames k apart (``warp_long``), fidelity to the per-frame stylization N(I_t) (MS-SSIM,
and a Darknet perceptual distance the reward never uses), sharpness relative to N(I_t), and, labelled
as what the method optimises, the reward's own terms. Every change is taken against N(I_t)
(``per_frame``) on the same clip and style, with a paired bootstrap interval over clips and seeds.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pandas as pd
import torch

from vstlib import cache, paths
from vstlib.evaluation import competitors, metrics
from vstlib.evaluation.bonneel import bonneel
from vstlib.evaluation.stats import summarise
from vstlib.executors import run_jobs
from vstlib.files import atomic_path, atomic_write_json
from vstlib.flow import farneback_flow, latent_flow, occlusion_mask
from vstlib.nets.memo import RecentInputs
from vstlib.nets.perceptual import CONTENT_NETS
from vstlib.registry import Registry
from vstlib.rl.checkpoint import POLICY, load_policy
from vstlib.rl.episodes import Episode, build_episode, make_env
from vstlib.rl.policy import LatentPolicy
from vstlib.rl.step import FixedBlend, LatentClip, policy_frames, unroll
from vstlib.runtime import fork_rng
from vstlib.video.clips import load_manifest, load_style
from vstlib.video.io import load_image
from vstlib.video.prepare import resolve_path
from vstlib.video.resize import resize, short_side_size

MEASURES = ("warp_dis", "warp_indep", "warp_long", "fidelity_ssim", "fidelity_perceptual", "sharpness",
            "style_gram", "content", "temporal")
ABSOLUTE = ("fidelity_perceptual",)           # a distance to N(I_t) itself (0 there): reported in its units
KEYS = ["method", "setting", "seed", "clip", "style", "seen_style"]


# --------------------------------------------------------------------------- the methods
@dataclass(frozen=True)
class Method:
    kind: str                      # "reference", "learner", "control", "training-free" or "bound"
    about: str
    optional: bool = True          # picked by compare.methods (() = every optional one)


METHODS = Registry("comparison method", "compare.methods", {
    "input": Method("reference", "the input video (the floor of the warping error)", False),
    "per_frame": Method("reference", "N(I_t), the per-frame stylization: every change is taken against it", False),
    "baseline": Method("reference", "D(E(N(I_t))) where the policy's latent is an encode/decode round trip", False),
    "init": Method("reference", "the main learner's policy untrained (its own start)", False),
    "policy": Method("learner", "the main learner, trained (every seed of train.seeds)", False),
    "reinforce_paper": Method("learner", "the paper's learner as published: REINFORCE, lr 1e-4, gate 5, the pair "
                                         "observation, the raw reward"),
    "rloo": Method("learner", "K samples per transition, leave-one-out normalised advantages, on the main run's "
                              "settings (compare.rloo_samples)"),
    "obs_pair": Method("learner", "the paper's observation (L_{t-1}, L_t) with the residual head"),
    "constant": Method("control", "one learned latent offset that never looks at the input"),
    "latent_blend": Method("training-free", "flow-guided blending in the policy's latent, a frontier over b"),
    "pixel_blend": Method("training-free", "flow-guided blending of the stylized frames, a frontier over b"),
    "bonneel": Method("training-free", "Bonneel et al. 2015 blind temporal consistency, a frontier over lambda"),
    "frozen_first": Method("control", "frame 0 repeated: consistent, follows no motion"),
    "direct": Method("bound", "per-clip Adam on the actions against the reward (the proxy's best at that budget)"),
    "refined": Method("learner", "the main learner's actions + compare.refine_steps Adam steps on the clip's reward "
                                 "at inference (amortised refinement's test-time form)"),
    "shac": Method("learner", "actor-critic with an analytic policy gradient (SHAC): the main run's settings, a "
                              "critic of the return bootstraps each window"),
    "pixels": Method("learner", "the main learner acting on the stylized frames N(I_t) instead of the stylizer's "
                                "latent (where the policy acts; MicroAST only), the same window in pixels"),
    "distill": Method("learner", "DAgger onto refinement: the policy regresses onto train.refine_steps Adam steps "
                                 "of its own actions"),
})


def chosen(cfg) -> list:
    """The optional rows ``cfg.compare.methods`` names (() = every optional one), checked against ``METHODS``."""
    for name in cfg.compare.methods:
        METHODS.pick(name)
    return [m for m, spec in METHODS.items() if spec.optional and (m in cfg.compare.methods or not cfg.compare.methods)]


# --------------------------------------------------------------------------- the judge
@dataclass
class Judge:
    """The judge's networks and settings (``cfg.eval``), built once."""

    perceptual: torch.nn.Module           # a distance the reward never uses
    long_term: int                        # k of the long-term warping error
    cache_dir: Path
    perceptual_size: int = 0              # the short side the perceptual distance is computed at (0: as is)

    def __post_init__(self):
        self.sizes = RecentInputs(2)          # the reference N(I_t) is resized once for all rows

    def small(self, x: torch.Tensor) -> torch.Tensor:
        if not self.perceptual_size:
            return x
        hw = short_side_size(*x.shape[-2:], self.perceptual_size, 1)
        return self.sizes.get(x, ("small",), lambda y, _: {"small": resize(y, hw)})["small"]

    def flows(self, ep: Episode) -> dict:
        """Farneback flows of the INPUT frames: consecutive (fw, bw) and k apart (lfw, lbw), cached by content."""
        k = self.k(ep.frames.shape[0])
        key = cache.key(cache.content_hash({"frames": ep.frames}), k, "farneback", 1)
        path = paths.ensure(self.cache_dir) / f"judge-flows-{ep.clip_id}-{key}.safetensors"

        def build():
            f = ep.frames.cpu()
            return {"fw": farneback_flow(f[:-1], f[1:]), "bw": farneback_flow(f[1:], f[:-1]),
                    "lfw": farneback_flow(f[:-k], f[k:]), "lbw": farneback_flow(f[k:], f[:-k])}
        return {n: v.to(ep.frames.device) for n, v in cache.cached_tensors(path, build, "judge flows").items()}

    def k(self, n_frames: int) -> int:
        """The long-term gap: ``long_term``, or the clip's length - 1 when it is shorter."""
        return max(1, min(self.long_term, n_frames - 1))

    @torch.no_grad()
    def score(self, S: torch.Tensor, ep: Episode, R: torch.Tensor, reward, flows: dict) -> dict:
        """Every measure of frames S (T,3,H,W) of episode ``ep``, R = N(I_t) (T,3,H,W): floats."""
        S = S.float().clamp(0, 1)
        k = self.k(S.shape[0])
        dis = ep.flows
        terms = reward.terms(S, ep.frames, dis, ep.base_terms, ep.reference)
        return {
            "warp_dis": metrics.warping_error(S[:-1], S[1:], dis["fw"], occlusion_mask(dis["fw"], dis["bw"], "ruder"))
            .mean().item(),
            "warp_indep": metrics.pair_warping_error(S[:-1], S[1:], flows["fw"], flows["bw"]).mean().item(),
            "warp_long": metrics.pair_warping_error(S[:-k], S[k:], flows["lfw"], flows["lbw"]).mean().item(),
            "fidelity_ssim": metrics.fidelity_ssim(S, R).mean().item(),
            "fidelity_perceptual": metrics.perceptual_fidelity(self.small(S), self.small(R), self.perceptual).mean().item(),
            "sharpness": metrics.relative_sharpness(S, R).item(),
            "style_gram": terms["style"].mean().item() if "style" in terms else float("nan"),
            "content": terms["content"].mean().item() if "content" in terms else float("nan"),
            "temporal": terms["temporal"].mean().item() if "temporal" in terms else float("nan"),
        }


def make_judge(cfg) -> Judge:
    with fork_rng():
        torch.manual_seed(0)
        net = CONTENT_NETS.pick(cfg.eval.perceptual)(cfg.reward, torch.device(cfg.train.device))
    return Judge(net, cfg.eval.long_term, paths.cache_dir(cfg.profile) / "judge", cfg.eval.perceptual_size)


# --------------------------------------------------------------------------- what is scored
@dataclass(frozen=True)
class Row:
    method: str
    setting: str
    seed: object                          # int, or None for methods without one
    frames: Callable[[Episode, object], torch.Tensor]   # (episode, env) -> S (T,3,H,W)
    key: str                              # what the frames depend on beyond the clip and style (cache)


def reference_rows(cfg) -> list[Row]:
    """The input, N(I_t), D(E(N(I_t))) where the latent is a round trip, and the untrained policy."""
    rows = [Row("input", "", None, lambda ep, env: ep.frames, "input"),
            Row("per_frame", "", None, lambda ep, env: per_frame(ep), "per_frame")]
    if cfg.backbone.latent != "native":
        rows.append(Row("baseline", "D(E(N))", None, lambda ep, env: ep.base.images, "baseline"))
    with fork_rng():
        torch.manual_seed(cfg.train.seed)
        init = LatentPolicy.from_config(cfg.policy).eval()
    digest = cache.content_hash(init.state_dict())
    rows.append(Row("init", "untrained " + _label(cfg), cfg.train.seed,
                    lambda ep, env: policy_frames(init, env.stylizer, ep.base, ep.clip), f"init-{digest}"))
    return rows


def competitor_rows(cfg) -> list[Row]:
    """The training-free methods as frontiers over their parameter, and the controls."""
    c, want = cfg.compare, chosen(cfg)
    rows = [Row("latent_blend", f"b={b:g}", None,
                (lambda b: lambda ep, env: policy_frames(FixedBlend(b), env.stylizer, ep.base, ep.clip))(b),
                f"latent_blend-{b}") for b in c.blends if "latent_blend" in want]
    rows += [Row("pixel_blend", f"b={b:g}", None, (lambda b: lambda ep, env: competitors.pixel_blend(ep, b))(b),
                 f"pixel_blend-{b}") for b in c.blends if "pixel_blend" in want]
    rows += [Row("bonneel", f"lambda={lam:g}", None,
                 (lambda lam: lambda ep, env: bonneel(per_frame(ep), ep.frames, ep.flows, lam=lam))(lam),
                 f"bonneel-{lam}") for lam in c.bonneel if "bonneel" in want]
    if "frozen_first" in want:
        rows.append(Row("frozen_first", "", None, lambda ep, env: competitors.frozen_first(ep), "frozen_first"))
    if "direct" in want:
        rows.append(Row("direct", f"{c.direct_steps} steps", None,
                        lambda ep, env: competitors.direct(ep, env.stylizer, env.reward, c.direct_steps, c.direct_lr,
                                                           dual_lr=cfg.train.dual_lr),
                        f"direct-{c.direct_steps}-{c.direct_lr}-{cfg.train.dual_lr}"))
    return rows


def learned_rows(cfg, runs: list) -> list[Row]:
    """One row per trained policy: ``runs`` = (method, seed, config, run name) (``compare.learned_runs``);
    with ``compare.refine_steps`` and the "refined" row chosen, the main learner's policies again with
    that many refinement steps at inference."""
    out, refine = [], cfg.compare.refine_steps if "refined" in chosen(cfg) else 0
    for method, seed, c, run in runs:
        path = paths.run_dir(cfg.profile, run) / POLICY
        pol = load_policy(path, c.policy, cfg.train.device)
        digest = cache.file_hash(path)
        if c.backbone.latent == "pixels" and cfg.backbone.latent != "pixels":   # it acts on N(I_t) itself
            frames = (lambda pol: lambda ep, env: pixel_policy_frames(pol, ep))(pol)
        else:
            frames = (lambda pol: lambda ep, env: policy_frames(pol, env.stylizer, ep.base, ep.clip))(pol)
        out.append(Row(method, _label(c), seed, frames, f"{method}-{digest}"))
        if method == "policy" and refine > 0:
            out.append(Row("refined", f"{_label(c)} + {refine} steps", seed,
                           (lambda pol, c: lambda ep, env: refined_frames(pol, env, ep, c, refine))(pol, c),
                           f"refined-{digest}-{refine}-{c.train.refine_lr}-{c.train.dual_lr}"))
    return out


class FramesAsLatent:
    """The renderer of a policy that acts on the stylized frames (``backbone.latent="pixels"``): identity."""

    @staticmethod
    def render(L, base, idx):
        return L.clamp(0, 1)


def pixel_policy_frames(policy, ep: Episode) -> torch.Tensor:
    """A pixel-space policy's frames on an episode of another latent: it acts on N(I_t) along the input's flow."""
    R = per_frame(ep)                                                          # (T,3,H,W)
    clip = LatentClip(R, *latent_flow(ep.flows, *R.shape[-2:]))
    return policy_frames(policy, FramesAsLatent, SimpleNamespace(images=R), clip)


def refined_frames(policy, env, ep: Episode, cfg, steps: int) -> torch.Tensor:
    """The policy's frames after ``steps`` Adam steps on its own actions against the clip's reward."""
    with torch.no_grad():
        actions = unroll(policy, ep.clip, "mean").actions[0]                    # (T-1,C,h,w)
    return competitors.direct(ep, env.stylizer, env.reward, steps, cfg.train.refine_lr, init=actions,
                              dual_lr=cfg.train.dual_lr)


def per_frame(ep: Episode) -> torch.Tensor:
    """N(I_t): the stylizer's own frames (before a latent round trip, where the latent has one)."""
    return (ep.base.per_frame if getattr(ep.base, "per_frame", None) is not None else ep.base.images).float()


def _label(c) -> str:
    return f"{c.train.learner}, {c.policy.head} head, {c.policy.observation} obs"


# --------------------------------------------------------------------------- the run
def styles(cfg) -> list[tuple[str, bool, int]]:
    """(style, seen?, clips it is scored on: 0 = all test clips): the trained style (``data.style``),
    then the unseen ones (``compare.unseen_styles``)."""
    return [(cfg.data.style, True, 0)] + [(s, False, cfg.compare.unseen_clips) for s in cfg.compare.unseen_styles]


def style_name(style: str) -> str:
    return Path(str(style).split(":", 1)[-1]).stem


def style_image(cfg, style: str, seen: bool) -> torch.Tensor:
    """(1,3,H,W): the prepared style image for the seen style, an unseen one read like it."""
    return load_style(cfg.profile) if seen else load_image(resolve_path(style), cfg.data.size, cfg.data.resize)


def evaluate_methods(cfg, runs: list, write: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every row (references, competitors, the trained policies ``runs``) on the test clips in
    every style; (per-clip rows, summary), written to ``results/<profile>/eval_per_clip.csv`` and
    ``eval_summary.csv``. Each (row, clip, style)'s scores are cached by what they depend on. The
    units, one per (clip, style), run on ``compare.executor`` (``score_unit``)."""
    token = uuid.uuid4().hex                                    # this evaluation's units share what they build
    test = load_manifest(cfg.profile)["test"]
    units = [(cfg, runs, token, style, seen, cid) for style, seen, n in styles(cfg) for cid in test[:n or None]]
    try:
        out = [r for rows in run_jobs(cfg.compare.executor, score_unit, units, desc="evaluate") for r in rows]
    finally:
        _BUILT.clear()                                          # the networks are not kept past the call
    per_clip = pd.DataFrame(out)[KEYS + list(MEASURES)]
    summary = summarise(per_clip, list(MEASURES), absolute=ABSOLUTE)
    if write:
        res = paths.ensure(paths.results_dir(cfg.profile))
        for name, df in (("eval_per_clip", per_clip), ("eval_summary", summary)):
            with atomic_path(res / f"{name}.csv") as tmp:
                df.assign(profile=cfg.profile).to_csv(tmp, index=False)
    return per_clip, summary


class Built:
    """What the units of one evaluation share within a process: the judge and the rows (built once),
    the current style's environment (one at a time, as styles come in order). A unit carries only
    the config and the evaluation's token, so it runs the same in this process or a Ray worker."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.token, self.shared, self.env = None, None, (None, None)

    def get(self, token: str, style: str, build_shared: Callable, build_env: Callable) -> tuple:
        if token != self.token:                                 # another evaluation: nothing carries over
            self.clear()
            self.token = token
        if self.shared is None:
            self.shared = build_shared()
        if self.env[0] != style:
            self.env = (None, None)                             # the last style's networks go first
            self.env = (style, build_env())
        return (*self.shared, self.env[1])


_BUILT = Built()


def score_unit(unit: tuple) -> list[dict]:
    """The rows of one (clip, style): ``unit`` = (config, learned runs, evaluation token, style, seen?,
    clip id); the judge, the rows and the style's environment built at the token's first unit here."""
    cfg, runs, token, style, seen, cid = unit
    judge, rows, env = _BUILT.get(
        token, style,
        lambda: (make_judge(cfg), reference_rows(cfg) + competitor_rows(cfg) + learned_rows(cfg, runs)),
        lambda: make_env(cfg, style_image(cfg, style, seen)))
    return score_clip(cfg, judge, env, cid, style, seen, rows)


def score_clip(cfg, judge: Judge, env, cid: str, style: str, seen: bool, rows: list[Row]) -> list[dict]:
    """The rows of one (clip, style): cached scores where their key matches, the rest scored now."""
    ep = build_episode(cfg, cid, env)
    digest = cache.key(cache.content_hash({"frames": ep.frames, "style": env.style}), cfg.eval, cfg.reward,
                       cfg.backbone, cfg.flow, 1)
    path = paths.ensure(judge.cache_dir) / f"scores-{cid}-{digest}.json"
    done = _read_json(path)
    flows, R, by_frames = None, per_frame(ep), {}
    for row in rows:
        if row.key in done:
            continue
        flows = flows if flows is not None else judge.flows(ep)
        S = row.frames(ep, env)
        same = cache.content_hash({"S": S})                  # equal frames (the untrained blend head is the
        if same not in by_frames:                            # latent blend at its b): scored once
            by_frames[same] = judge.score(S, ep, R, env.reward, flows)
        done[row.key] = by_frames[same]
    atomic_write_json(path, done)
    key = {"clip": cid, "style": style_name(style), "seen_style": seen}
    return [{"method": r.method, "setting": r.setting, "seed": r.seed, **key, **done[r.key]} for r in rows]


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


__all__ = ["METHODS", "Method", "chosen", "evaluate_methods", "make_judge", "Judge", "Row", "reference_rows", "competitor_rows", "learned_rows",
           "per_frame", "styles", "score_unit", "MEASURES", "KEYS"]
