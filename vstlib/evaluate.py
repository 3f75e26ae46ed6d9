"""Evaluation: Table 1 (losses) and Table 2 (embedder similarities), baseline vs. policy.

Table 1 also holds the reference rows ``input`` (the unstylized clip: the flicker floor of the
warping error) and ``per-frame`` (the stylizer's own frames before the latent round trip, e.g.
N(I_t) on faststyle; absent where the backbone has none). Table 2 names its embedder in an
``embedder`` column (``models.EMBEDDER_NAMES``): CLIP, or Darknet-tiny on the cpu profile.

    tables = evaluate(get_config("smoke"))   # results/smoke/table1.csv, table2.csv (+ *_per_clip.csv)

The policy is judged by its MEAN action (no sampling). Every clip is scored with the flows of
its ORIGINAL consecutive frames; frame 0 is DiffuseST's frame for both methods (the policy
acts from frame 1 on), so style/content average over all T frames and temporal terms over the
T-1 consecutive pairs. Table 1's losses (and the flicker curves) are computed at
``reward.loss_size`` like the reward (``RewardModel.loss_inputs``: 256 in the paper profile).
"""
from __future__ import annotations

from pathlib import Path

import torch

from vstlib import paths
from vstlib.checkpoint import CKPT, POLICY, load_policy
from vstlib.clips import load_manifest
from vstlib.rollout import build_episode, make_env, policy_frames
from vstlib.utils import InputError, atomic_path, progress, resolve_device

METHODS = ("baseline", "policy")
REFERENCES = ("input", "per-frame")            # Table 1 only: the clip itself, the stylizer's own frames
ORDER = REFERENCES + METHODS
SPLITS = ("train", "test")
COLUMNS1 = ["method", "split", "content", "style", "temporal", "warp_error"]
COLUMNS2 = ["method", "split", "content", "style", "temporal"]


@torch.no_grad()
def clip_losses(S: torch.Tensor, frames: torch.Tensor, flows: dict, reward_model, warp_error: str = "lai") -> dict:
    """Table 1 metrics of stylized frames S (T,3,H,W) against originals (T,3,H,W): floats, at
    ``reward.loss_size`` (frames, flows and masks resized by ``reward_model.loss_inputs``).

    ``warp_error``: its definition (rewards.warping_error; "lai" = Lai et al. 2018, summed over RGB)."""
    from vstlib.rewards import temporal_loss, warping_error

    f = {k: flows[k].to(S) for k in ("fw", "bw", "mask_fw", "mask_bw")}        # (T-1,...) each
    S, frames, f = reward_model.loss_inputs(S, frames.to(S), f)               # at the loss size
    prev, cur = S[:-1], S[1:]                                                  # (T-1,3,H,W) pairs
    return {
        "content": reward_model.content(S, frames.to(S)).mean().item(),        # LPIPS, over T frames
        "style": reward_model.style(S).mean().item(),                           # Gram, over T frames
        "temporal": temporal_loss(prev, cur, f["fw"], f["bw"], f["mask_fw"], f["mask_bw"]).mean().item(),
        "warp_error": warping_error(prev, cur, f["fw"], f["mask_fw"], warp_error).mean().item(),
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


def evaluate(cfg, run: str = "main", policy=None) -> dict:
    """Score the baseline and the trained policy of ``run`` on the train and test clips.

    Returns {"table1", "table2", "table1_per_clip", "table2_per_clip"} as pandas DataFrames,
    also written as CSV to ``results/<profile>/`` (run "main") or the run's folder (others).
    ``policy`` overrides the run's ``policy.safetensors`` (e.g. a fresh policy in tests).
    """
    import pandas as pd

    from vstlib.models import EMBEDDER_NAMES, EMBEDDERS, pick
    from vstlib.tables import profile_note

    device = resolve_device(cfg.train.device)
    manifest = load_manifest(cfg.profile)                                      # prepared data first
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
    policy = policy.to(device).eval()

    stylizer, reward_model, style = make_env(cfg, device)
    embed = pick(EMBEDDERS, cfg.eval.embedder, "evaluation embedder")(cfg.eval, device)
    style_feat = embed(style)                                                  # (1,D)

    rows1, rows2 = [], []
    clips = [(split, cid) for split in SPLITS for cid in manifest.get(split, [])]
    for split, cid in progress(clips, desc="evaluate"):
        ep = build_episode(cfg, cid, stylizer, reward_model, device)
        frames = ep.frames                                                     # (T,3,H,W)
        with torch.no_grad():
            stylized = {"baseline": ep.base.images.float(),                    # (T,3,H,W)
                        "policy": policy_frames(policy, stylizer, ep.base, ep.flows).float()}
        reference = {"input": frames.float()}
        if getattr(ep.base, "per_frame", None) is not None:
            reference["per-frame"] = ep.base.per_frame.float()                 # (T,3,H,W) N(I_t)
        for method, S in {**reference, **stylized}.items():
            S = S.clamp(0, 1)
            key = {"method": method, "split": split, "clip": cid, "n_frames": S.shape[0]}
            rows1.append({**key, **clip_losses(S, frames, ep.flows, reward_model, cfg.eval.warp_error)})
            if method in METHODS:
                rows2.append({**key, **clip_similarities(S, frames, style_feat, embed)})

    note = profile_note(cfg.profile)
    per1, per2 = pd.DataFrame(rows1), pd.DataFrame(rows2)
    per2["embedder"] = EMBEDDER_NAMES.get(cfg.eval.embedder, cfg.eval.embedder)
    out = {"table1": _summarise(per1, COLUMNS1), "table2": _summarise(per2, COLUMNS2, extra=["embedder"]),
           "table1_per_clip": per1, "table2_per_clip": per2}
    dest = paths.results_dir(cfg.profile) if run == "main" else paths.run_dir(cfg.profile, run)
    for name, df in out.items():
        df["profile"] = cfg.profile
        df["note"] = note
        _write_csv(df, paths.ensure(dest) / f"{name}.csv")
    return out


@torch.no_grad()
def flicker_curves(cfg, clip_id: str, policy=None) -> dict:
    """{method: per-pair warping error (T-1,) numpy} of one clip for input, per-frame (if the
    backbone has it), baseline and (with ``policy``, mean action) policy: the flicker figure's data."""
    from vstlib.rewards import warping_error

    device = resolve_device(cfg.train.device)
    stylizer, reward_model, _ = make_env(cfg, device)
    ep = build_episode(cfg, clip_id, stylizer, reward_model, device)
    runs = {"input": ep.frames.float()}
    if getattr(ep.base, "per_frame", None) is not None:
        runs["per-frame"] = ep.base.per_frame.float()
    runs["baseline"] = ep.base.images.float()
    if policy is not None:
        runs["policy"] = policy_frames(policy.to(device).eval(), stylizer, ep.base, ep.flows).float()
    out = {}
    for k, S in runs.items():                                                  # at the loss size, as Table 1
        S, _, f = reward_model.loss_inputs(S.clamp(0, 1), ep.frames.float(), {n: v.to(device) for n, v in ep.flows.items()})
        out[k] = warping_error(S[:-1], S[1:], f["fw"], f["mask_fw"]).flatten().cpu().numpy()
    return out


def _summarise(per_clip, columns: list, extra: tuple = ()):
    """Mean over the clips of each (method, split), in the order train/test x input/per-frame/baseline/policy."""
    import pandas as pd

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


__all__ = ["evaluate", "flicker_curves", "clip_losses", "clip_similarities", "METHODS", "REFERENCES", "SPLITS"]
