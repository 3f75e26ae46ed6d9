"""The learners beside their competitors and controls, on held-out clips (issue 11).

    df = compare(cfg)       # results/<profile>/learners.csv: one row per (method, seed, split)

Rows (``eval.compare`` picks the optional ones; every name works on every profile):
- ``baseline``          the per-frame baseline D(L_t) (every change is relative to it);
- ``policy``            the main learner (cfg), one row per seed of ``train.seeds``;
- ``reinforce_paper``   the paper's learner as published (REINFORCE, lr 1e-4, gate 5, pair
                        observation, raw reward), the ablation grid's cell;
- ``rloo``              policy gradients done better: K samples per transition, leave-one-out
                        normalised advantages, on the main run's settings (``eval.rloo_samples``);
- ``obs_pair``          the paper's observation (L_{t-1}, L_t) with the residual head: the
                        observation grid's cell;
- ``weights_<w>``       the main learner with temporal weight w (``eval.frontier``): the frontier
                        over the reward's weights, the main run being its point at its own weight;
- ``constant``          control: one learned latent offset that never looks at the input
                        (``policy.head="constant"``, trained by the main learner);
- ``latent_blend``, ``pixel_blend``  training-free, weight b chosen on the TRAIN clips (the best
                        mean reward over ``eval.blend_grid``; the first ``eval.select_clips`` of
                        them, 0 = all), reported on the test clips;
- ``frozen_first``      control: frame 0 repeated;
- ``direct``            per-clip gradient descent on the actions (``eval.direct_steps`` Adam steps).

Relative columns (``d_<metric>``, %) compare a row with the baseline on the same split: the
goal is d_warp_error <= -30 with d_style and d_content <= +5. ``edge_corr`` (Sobel edges of S_t
vs I_t) catches outputs that stop following the input.
"""
from __future__ import annotations

import time

import torch

from vstlib import paths
from vstlib.evaluation import competitors as methods
from vstlib.evaluation.evaluate import clip_losses, evaluate
from vstlib.files import atomic_path
from vstlib.rl.episodes import build_episode, crop_episode, make_env
from vstlib.rl.train import read_log, train
from vstlib.runtime import progress, resolve_device
from vstlib.video.clips import load_manifest

METRICS = ("warp_error", "temporal", "style", "content", "edge_corr")
COLUMNS = ["method", "seed", "split", "param", *METRICS, "d_warp_error", "d_style", "d_content", "n_clips",
           "train_s", "reward_queries"]


def seed_runs(cfg) -> dict:
    """{seed: (config, run name)} of the main learner: run "main" for ``train.seed``, "seeds/<s>" else."""
    return {s: (cfg.override(train={"seed": s}), "main" if s == cfg.train.seed else f"seeds/{s}")
            for s in dict.fromkeys([cfg.train.seed, *cfg.train.seeds])}


def learned_methods(cfg) -> dict:
    """{method: (config, run of the first seed, setting)} of every learned row ``compare`` trains."""
    from vstlib.config import ablations

    grid = lambda name: ablations(cfg.override(train={"ablation_grids": (name,)}))[name]   # noqa: E731
    out = {"policy": (cfg, "main", _label(cfg))}
    for m in cfg.eval.compare:
        if m == "reinforce_paper":                     # the paper's learner as published: the grid's cell
            c = grid("learner")["reinforce_paper"]
            out[m] = (c, "ablations/learner/reinforce_paper", _label(c))
        elif m == "rloo":                              # better policy gradients on the main run's settings
            c = cfg.override(train={"learner": "rloo", "samples": cfg.eval.rloo_samples, "normalize_advantage": True})
            out[m] = (c, "learners/rloo", f"{_label(c)}, K={c.train.samples}")
        elif m == "obs_pair":                          # the paper's observation: the observation grid's cell
            c = grid("observation")["obs_pair"]
            out[m] = (c, "ablations/observation/obs_pair", _label(c))
        elif m == "constant":                          # control: one offset that never looks at the input
            c = cfg.override(policy={"head": "constant", "observation": "pair"})
            out[m] = (c, "controls/constant", _label(c))
    for w in cfg.eval.frontier:                        # the frontier over the temporal weight
        c = cfg.override(reward={"w_temp": float(w)})
        if c != cfg:                                   # the main run is the frontier's point at its own weight
            out[f"weights_{w:g}"] = (c, f"frontier/w{w:g}", _weights(c))
    return out


def _label(c) -> str:
    return f"{c.train.learner}, {c.policy.head} head, {c.policy.observation} obs"


def _weights(c) -> str:
    from vstlib.rl.rewards import weight

    return "weights " + "/".join(f"{weight(c.reward, t):g}" for t in c.reward.terms)


def learned_runs(cfg) -> list:
    """(method, seed, config, run) of every policy ``compare`` trains, in training order.

    Every learned method runs on every seed of ``train.seeds`` (issue 11: >= 3 seeds per learner),
    or on the first ``eval.control_seeds`` of them beside the main learner (a budget)."""
    runs = []
    for method, (c, first, _) in learned_methods(cfg).items():
        seeds = list(seed_runs(c).items())
        if method != "policy" and cfg.eval.control_seeds > 0:
            seeds = seeds[:cfg.eval.control_seeds]
        for s, (cs, r) in seeds:
            runs.append((method, s, cs, r if method == "policy" else (first if r == "main" else f"{first}-s{s}")))
    return runs


def _train_cost(cfg, run: str) -> tuple:
    """(seconds, reward queries) of a run's updates, rollouts included (environment set-up not)."""
    log = read_log(paths.run_dir(cfg.profile, run))
    return (float(log["time"].sum()) if "time" in log else float("nan"),
            int(log["queries"].sum()) if "queries" in log else -1)


@torch.no_grad()
def _select_blend(cfg, kind: str, episodes: list, stylizer, reward_model) -> float:
    """The b of ``eval.blend_grid`` with the best mean reward on the (train) episodes."""
    scores = {}
    for b in cfg.eval.blend_grid:
        r = [reward_model.terms(methods.BLENDS[kind](ep, stylizer, b).clamp(0, 1), ep.frames, ep.flows,
                                ep.base_terms)["reward"].mean() for ep in episodes]
        scores[b] = float(torch.stack(r).mean())
    return max(scores, key=scores.get)


def compare(cfg) -> "pd.DataFrame":
    """Score every method of the comparison on the test clips (and the main run on train);
    writes ``results/<profile>/learners.csv`` and returns it."""
    import pandas as pd

    device = resolve_device(cfg.train.device)
    manifest = load_manifest(cfg.profile)
    rows = []

    # 1. learned policies: evaluate() scores them (cached per policy file)
    settings = {m: label for m, (_, _, label) in learned_methods(cfg).items()}
    for method, seed, c, run in progress(learned_runs(cfg), desc="learners"):
        train(c, run=run)
        splits = ("train", "test") if run == "main" else ("test",)           # the main run on both splits
        per = evaluate(c, run=run, splits=splits)["table1_per_clip"]
        t_s, queries = _train_cost(cfg, run)
        for split, g in per[per.method.isin(["baseline", "policy"])].groupby("split", sort=False):
            for m, gm in g.groupby("method", sort=False):
                if m == "baseline" and run != "main":                        # one baseline row per split
                    continue
                pol = m == "policy"
                rows.append({"method": method if pol else "baseline", "seed": seed if pol else None, "split": split,
                             "param": settings[method] if pol else "", "n_clips": len(gm),
                             "train_s": t_s if pol else 0.0, "reward_queries": queries if pol else 0,
                             **gm[list(METRICS)].mean().to_dict()})

    # 2. training-free methods and controls, b chosen on train, scored on test
    stylizer, reward_model, _ = make_env(cfg, device)
    want = [m for m in ("latent_blend", "pixel_blend", "frozen_first", "direct") if m in cfg.eval.compare]
    params = {}
    queries = {m: 0 for m in want}                                              # reward evaluations spent
    if any(m in want for m in methods.BLENDS):
        train_eps = []
        for cid in manifest["train"][:cfg.eval.select_clips or None]:
            ep = build_episode(cfg, cid, stylizer, reward_model, device)
            H, W = ep.obs.shape[-2:]
            k = min(cfg.train.crop or max(H, W), H, W)                         # selection on the central window
            train_eps.append(crop_episode(ep, ((H - k) // 2, (W - k) // 2, k, k), reward_model,
                                          paths.cache_dir(cfg.profile) / "terms"))
        for m in (m for m in want if m in methods.BLENDS):
            params[m] = _select_blend(cfg, m, train_eps, stylizer, reward_model)
            queries[m] = len(cfg.eval.blend_grid) * sum(ep.n_steps for ep in train_eps)   # the selection
    per = {m: [] for m in want}
    seconds = {m: 0.0 for m in want}
    for cid in progress(manifest["test"], desc="competitors"):
        ep = build_episode(cfg, cid, stylizer, reward_model, device)
        for m in want:
            t0 = time.time()
            if m in methods.BLENDS:
                S = methods.BLENDS[m](ep, stylizer, params[m])
            elif m == "frozen_first":
                S = methods.frozen_first(ep)
            else:
                S = methods.direct(ep, stylizer, reward_model, cfg.eval.direct_steps, cfg.eval.direct_lr)
                queries[m] += cfg.eval.direct_steps * ep.n_steps
            seconds[m] += time.time() - t0
            per[m].append(clip_losses(S.clamp(0, 1), ep.frames, ep.flows, reward_model, cfg.eval.warp_error))
    for m in want:
        if not per[m]:
            continue
        mean = pd.DataFrame(per[m])[list(METRICS)].mean().to_dict()
        param = {"direct": f"{cfg.eval.direct_steps} steps, lr {cfg.eval.direct_lr:g}"}.get(m, f"b={params.get(m, '')}")
        rows.append({"method": m, "seed": None, "split": "test", "param": param if m != "frozen_first" else "",
                     "n_clips": len(per[m]), "train_s": seconds[m], "reward_queries": queries[m], **mean})

    # 3. relative to the baseline of the same split
    df = pd.DataFrame(rows)
    base = df[df.method == "baseline"].drop_duplicates("split").set_index("split")
    for k in ("warp_error", "style", "content"):
        df[f"d_{k}"] = 100 * (df[k] / df.split.map(base[k]) - 1)
    df = df[COLUMNS]
    df["profile"] = cfg.profile
    with atomic_path(paths.ensure(paths.results_dir(cfg.profile)) / "learners.csv") as tmp:
        df.to_csv(tmp, index=False)
    return df


def summary(df) -> "pd.DataFrame":
    """Mean and std over seeds of each method on the test clips (the paper's learners table)."""
    t = df[df.split == "test"]
    g = t.groupby("method", sort=False)
    out = g[["d_warp_error", "d_style", "d_content", "edge_corr"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = g.size()
    out["param"] = g["param"].first()
    out["reward_queries"] = g["reward_queries"].mean()           # per seed (deterministic: no timings here)
    return out.reset_index()


__all__ = ["compare", "summary", "learned_methods", "learned_runs", "seed_runs", "COLUMNS"]
