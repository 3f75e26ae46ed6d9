"""Evaluation: Table 1 (losses) and Table 2 (embedder similarities), baseline vs. policy.

Table 1 also holds the reference rows ``input`` (the unstylized clip: the flicker floor of the
warping error) and ``per-frame`` (the stylizer's own frames before the latent round trip, e.g.
N(I_t) on faststyle; absent where the backbone has none). Table 2 names its embedder in an
``embedder`` column (``nets.perceptual.EMBEDDER_NAMES``): CLIP, or Darknet-tiny on the cpu profile.

    tables = evaluate(get_config("smoke"))   # results/smoke/table1.csv, table2.csv (+ *_per_clip.csv)

The policy is judged by its MEAN action (no sampling). Every clip is scored with the flows of
its ORIGINAL consecutive frames; frame 0 is DiffuseST's frame for both methods (the policy
acts from frame 1 on), so style/content average over all T frames and temporal terms over the
T-1 consecutive pairs. Table 1's losses (and the flicker curves) are computed at
``reward.loss_size`` like the reward (``RewardModel.loss_inputs``: 256 in the paper profile).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from vstlib import cache, paths
from vstlib.errors import InputError
from vstlib.evaluation.metrics import edge_correlation, warping_error
from vstlib.evaluation.tables import profile_note
from vstlib.files import atomic_path, atomic_write_json
from vstlib.nets.perceptual import EMBEDDER_NAMES, EMBEDDERS
from vstlib.rl.checkpoint import CKPT, POLICY, load_policy
from vstlib.rl.episodes import build_episode, crop_episode, make_env, random_box
from vstlib.rl.rewards import normalised, temporal_loss
from vstlib.rl.step import policy_frames
from vstlib.runtime import progress
from vstlib.video.clips import load_manifest

METHODS = ("baseline", "policy")
REFERENCES = ("input", "per-frame")            # Table 1 only: the clip itself, the stylizer's own frames
ORDER = REFERENCES + METHODS
SPLITS = ("train", "test")
COLUMNS1 = ["method", "split", "content", "style", "temporal", "warp_error", "edge_corr"]
COLUMNS2 = ["method", "split", "content", "style", "temporal"]


@torch.no_grad()
def clip_losses(S: torch.Tensor, frames: torch.Tensor, flows: dict, reward_model, warp_error: str = "lai") -> dict:
    """Table 1 metrics of stylized frames S (T,3,H,W) against originals (T,3,H,W): floats, at
    ``reward.loss_size`` (frames, flows and masks resized by ``reward_model.loss_inputs``).

    ``warp_error``: its definition (metrics.warping_error; "lai" = Lai et al. 2018, summed over RGB)."""
    f = {k: flows[k].to(S) for k in ("fw", "bw", "mask_fw", "mask_bw")}        # (T-1,...) each
    S, frames, f, _ = reward_model.loss_inputs(S, frames.to(S), f)            # at the loss size
    prev, cur = S[:-1], S[1:]                                                  # (T-1,3,H,W) pairs
    return {
        "content": reward_model.content(S, frames.to(S)).mean().item(),        # LPIPS, over T frames
        "style": reward_model.style(S).mean().item(),                           # Gram, over T frames
        "temporal": temporal_loss(prev, cur, f["fw"], f["bw"], f["mask_fw"], f["mask_bw"]).mean().item(),
        "warp_error": warping_error(prev, cur, f["fw"], f["mask_fw"], warp_error).mean().item(),
        "edge_corr": edge_correlation(S, frames.to(S)).mean().item(),
    }


@torch.no_grad()
def clip_similarities(S: torch.Tensor, frames: torch.Tensor, style_feat: torch.Tensor, embed) -> dict:
    """Table 2 metrics: mean cosine similarities of the embedder's unit vectors (CLIP by default)."""
    fs = embed(S)                                                              # (T,D)
    fo = embed(frames)                                                         # (T,D)
    return {
        "content": (fs * fo).sum(-1).mean().item(),                            # S_t vs I_t
        "style": (fs @ style_feat.T).mean().item(),                            # S_t vs the style image
        "temporal": (fs[:-1] * fs[1:]).sum(-1).mean().item(),                  # S_t vs S_{t+1}
    }


def evaluate(cfg, run: str = "main", policy=None, splits: tuple = SPLITS) -> dict:
    """Score the baseline and the trained policy of ``run`` on the clips of ``splits``.

    Returns {"table1", "table2", "table1_per_clip", "table2_per_clip"} as pandas DataFrames,
    also written as CSV to ``results/<profile>/`` (run "main") or the run's folder (others).
    ``policy`` overrides the run's ``policy.safetensors`` (e.g. a fresh policy in tests).
    The per-clip scores of a run's policy file are cached in the run folder (``evaluation.json``,
    keyed by the policy file's bytes, the scoring config and the clips; rebuilt when the key or
    the file does not match): notebooks 04, 05 and 06 score the main run once.
    """
    device = torch.device(cfg.train.device)
    manifest = load_manifest(cfg.profile)                                      # prepared data first
    clips = [(split, cid) for split in splits for cid in manifest.get(split, [])]
    cache_path = None
    if policy is None:
        ckpt = paths.run_dir(cfg.profile, run) / POLICY
        if not ckpt.exists():
            if (ckpt.parent / CKPT).exists():                                  # killed before the policy write
                raise InputError("the run's policy file is missing", ckpt,
                                 f"run `vst train --profile {cfg.profile} --run {run}`: it rewrites it from "
                                 f"the final checkpoint (or resumes an unfinished run)")
            raise InputError("no trained policy", ckpt,
                             f"train it first: `vst train --profile {cfg.profile} --run {run}`")
        policy = load_policy(ckpt, cfg.policy, device)
        cache_path = ckpt.parent / EVAL_CACHE
    policy = policy.to(device).eval()

    # per clip: cached scores of this policy file where the key matches, the rest scored now
    entries = _read_eval_entries(cache_path) if cache_path is not None else {}
    keys = {c: evaluation_key(cfg, ckpt, manifest, [list(c)]) for c in clips} if cache_path is not None else {}
    todo = [c for c in clips if keys.get(c) not in entries]
    scored = _score_clips(cfg, policy, todo, device) if todo else {}
    if cache_path is not None and todo:
        entries = _read_eval_entries(cache_path)                               # fresh read, then merge
        entries.update({keys[c]: scored[c] for c in todo})
        atomic_write_json(cache_path, {"entries": entries})
    got = {c: scored[c] if c in scored else entries[keys[c]] for c in clips}
    rows1 = [r for c in clips for r in got[c]["table1"]]
    rows2 = [r for c in clips for r in got[c]["table2"]]

    note = profile_note(cfg.profile)
    per1, per2 = pd.DataFrame(rows1), pd.DataFrame(rows2)
    per2["embedder"] = EMBEDDER_NAMES.get(cfg.eval.embedder, cfg.eval.embedder)
    out = {"table1": _summarise(per1, COLUMNS1), "table2": _summarise(per2, COLUMNS2, extra=["embedder"]),
           "table1_per_clip": per1, "table2_per_clip": per2}
    # the paper's tables come from the main run scored on every split; anything else stays in its run folder
    full = run == "main" and tuple(splits) == SPLITS
    dest = paths.results_dir(cfg.profile) if full else paths.run_dir(cfg.profile, run)
    for name, df in out.items():
        df["profile"] = cfg.profile
        df["note"] = note
        _write_csv(df, paths.ensure(dest) / f"{name}.csv")
    return out


EVAL_CACHE = "evaluation.json"


def evaluation_key(cfg, policy_file: Path, manifest: dict, clips: list) -> str:
    """What the scores of a policy file depend on: its bytes, the scoring config, the clips
    (one entry per clip: a test-only evaluation is reused by a later train + test one)."""
    return cache.key({"policy": cache.file_hash(policy_file), "config": scoring_config(cfg, drop=("train",)),
                      "clips": clips, "manifest": cache.key(manifest), "version": 3})


def scoring_config(cfg, drop: tuple) -> dict:
    """The config a policy's (or a reference row's) scores depend on: every section but those in
    ``drop`` and ``compare`` (what else is compared does not change how a policy is scored)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in drop + ("compare",)}


def _read_eval_entries(path) -> dict:
    """{key: {"table1": rows, "table2": rows}} of a run's evaluation cache; {} if absent or damaged."""
    try:
        d = json.loads(Path(path).read_text())
        entries = d.get("entries", {})
        return {k: v for k, v in entries.items()
                if isinstance(v, dict) and isinstance(v.get("table1"), list) and isinstance(v.get("table2"), list)}
    except (OSError, ValueError, AttributeError):
        return {}                                                              # absent or damaged: rescore


@torch.no_grad()
def _score_clips(cfg, policy, clips: list, device) -> dict:
    """{(split, clip): {"table1": rows, "table2": rows}} of the policy and the reference rows."""
    env = make_env(cfg)
    reward_model, style = env.reward, env.style
    embed = EMBEDDERS.pick(cfg.eval.embedder)(cfg.eval, device)
    style_feat = embed(style)                                                  # (1,D)
    out = {}
    for split, cid in progress(clips, desc="evaluate"):
        ep = build_episode(cfg, cid, env)
        ref = _reference_rows(cfg, split, cid, ep, style, reward_model, embed, style_feat)
        S = policy_frames(policy, env.stylizer, ep.base, ep.clip).clamp(0, 1)  # (T,3,H,W)
        key = {"method": "policy", "split": split, "clip": cid, "n_frames": S.shape[0]}
        out[(split, cid)] = {
            "table1": ref["table1"] + [{**key, **clip_losses(S, ep.frames, ep.flows, reward_model, cfg.eval.warp_error)}],
            "table2": ref["table2"] + [{**key, **clip_similarities(S, ep.frames, style_feat, embed)}]}
    return out


def _reference_rows(cfg, split: str, cid: str, ep, style, reward_model, embed, style_feat) -> dict:
    """The rows that do not depend on the policy (input, per-frame, baseline), disk-cached per clip:
    every policy scored on a clip (seeds, controls, ablation cells) shares them."""
    part = scoring_config(cfg, drop=("train", "policy", "profile"))
    digest = cache.content_hash({"frames": ep.frames, "images": ep.base.images, "style": style})
    path = paths.cache_dir(cfg.profile) / "scores" / f"{cid}-{cache.key(part, split, digest, 1)}.json"
    methods = [*REFERENCES[:1], *(["per-frame"] if getattr(ep.base, "per_frame", None) is not None else []),
               "baseline"]
    try:
        d = json.loads(path.read_text())
        if ([r["method"] for r in d["table1"]] == methods and [r["method"] for r in d["table2"]] == ["baseline"]
                and all(set(COLUMNS1[2:]) <= set(r) for r in d["table1"])):
            return d
        cache.notice(path, "reference scores", "does not hold the expected rows")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:
        cache.notice(path, "reference scores", f"does not decode ({type(err).__name__})")
    frames = ep.frames
    S = {"input": frames.float(), "per-frame": getattr(ep.base, "per_frame", None), "baseline": ep.base.images}
    d = {"table1": [], "table2": []}
    for m in methods:
        x = S[m].float().clamp(0, 1)
        key = {"method": m, "split": split, "clip": cid, "n_frames": x.shape[0]}
        d["table1"].append({**key, **clip_losses(x, frames, ep.flows, reward_model, cfg.eval.warp_error)})
        if m in METHODS:
            d["table2"].append({**key, **clip_similarities(x, frames, style_feat, embed)})
    atomic_write_json(paths.ensure(path.parent) / path.name, d)
    return d


@torch.no_grad()
def flicker_curves(cfg, clip_id: str, policy=None) -> dict:
    """{method: per-pair warping error (T-1,) numpy} of one clip for input, per-frame (if the
    backbone has it), baseline and (with ``policy``, mean action) policy: the flicker figure's data."""
    env = make_env(cfg)
    ep = build_episode(cfg, clip_id, env)
    S = policy_frames(policy.to(env.device).eval(), env.stylizer, ep.base, ep.clip) if policy is not None else None
    return episode_flicker(ep, env.reward, S)


@torch.no_grad()
def episode_flicker(ep, reward_model, S_policy=None) -> dict:
    """``flicker_curves`` of a built episode, with the policy's frames (T,3,H,W) if already rendered."""
    runs = {"input": ep.frames.float()}
    if getattr(ep.base, "per_frame", None) is not None:
        runs["per-frame"] = ep.base.per_frame.float()
    runs["baseline"] = ep.base.images.float()
    if S_policy is not None:
        runs["policy"] = S_policy.float()
    flows = {n: v.to(ep.frames.device) for n, v in ep.flows.items()}
    out = {}
    for k, S in runs.items():                                                  # at the loss size, as Table 1
        S, _, f, _ = reward_model.loss_inputs(S.clamp(0, 1), ep.frames.float(), flows)
        out[k] = warping_error(S[:-1], S[1:], f["fw"], f["mask_fw"]).flatten().cpu().numpy()
    return out


@torch.no_grad()
def window_gap(cfg, run: str = "main", windows: int = 4) -> pd.DataFrame:
    """Does the training reward track the reward of what is scored? On each train clip, the run's
    policy (mean action) on ``windows`` random windows of ``train.crop`` cells (as training sees
    them) against the whole frames: each normalised term and the reward, per clip. With
    ``train.crop = 0`` training sees whole frames and the gap is 0 by construction."""
    env = make_env(cfg)
    policy = load_policy(paths.run_dir(cfg.profile, run) / POLICY, cfg.policy, cfg.train.device)
    rows = []
    for cid in load_manifest(cfg.profile)["train"]:
        ep = build_episode(cfg, cid, env)
        views = {"full": [ep]}
        if cfg.train.crop > 0:
            views["window"] = [crop_episode(ep, random_box(ep, cfg.train.crop, (cfg.train.seed, 10_000, i)), env.reward)
                               for i in range(windows)]
        for view, eps in views.items():
            norm = []
            for e in eps:
                S = policy_frames(policy, env.stylizer, e.base, e.clip)
                t = env.reward.terms(S, e.frames, e.flows, e.base_terms, e.reference, e.loss_size)
                n = normalised(t, cfg.reward, e.base_terms)
                norm.append({**{k: float(v.mean()) for k, v in n.items()}, "reward": float(t["reward"].mean())})
            rows.append({"clip": cid, "view": view, **pd.DataFrame(norm).mean().to_dict()})
    return pd.DataFrame(rows)


def _summarise(per_clip, columns: list, extra: tuple = ()):
    """Mean over the clips of each (method, split), in the order train/test x input/per-frame/baseline/policy."""
    if per_clip.empty:
        return pd.DataFrame(columns=columns + ["n_clips", *extra])
    metrics = columns[2:]
    g = per_clip.groupby(["split", "method"], sort=False)
    df = g[metrics].mean().join(g.size().rename("n_clips")).reset_index()
    order = {"split": {s: i for i, s in enumerate(SPLITS)}, "method": {m: i for i, m in enumerate(ORDER)}}
    df = df.sort_values(["split", "method"], key=lambda c: c.map(order[c.name]))
    for name in extra:                                      # constant per table (e.g. the embedder)
        df[name] = per_clip[name].iloc[0]
    return df[columns + ["n_clips", *extra]].reset_index(drop=True)


def _write_csv(df, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


__all__ = ["evaluate", "flicker_curves", "episode_flicker", "clip_losses", "clip_similarities", "evaluation_key", "window_gap", "METHODS", "REFERENCES", "SPLITS"]
