"""The learners beside their competitors and controls, on held-out clips.

    df = compare(cfg)       # results/<profile>/learners.csv: one row per (method, seed, split)

``METHODS`` is the one table of the comparison's rows; ``compare.methods`` picks the optional ones
(() = all), ``compare.frontier`` adds the main learner at other temporal weights. Learned rows run
on every seed of ``train.seeds`` (or the first ``compare.control_seeds`` beside the main learner).
Changes (``d_<metric>``, %) compare a row with the per-frame baseline on the same split; ``edge_corr``
(Sobel edges of S_t vs I_t) catches outputs that stop following the input's structure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from vstlib import paths
from vstlib.config import ablations
from vstlib.evaluation import competitors
from vstlib.evaluation.evaluate import clip_losses, evaluate
from vstlib.files import atomic_path
from vstlib.registry import Registry
from vstlib.rl.episodes import build_episode, crop_episode, make_env
from vstlib.rl.rewards import weight, weighted_reward
from vstlib.rl.train import read_log, train
from vstlib.runtime import progress
from vstlib.video.clips import load_manifest

METRICS = ("warp_error", "temporal", "style", "content", "edge_corr")
COLUMNS = ["method", "seed", "split", "param", *METRICS, "d_warp_error", "d_style", "d_content", "n_clips",
           "train_s", "reward_queries"]


@dataclass(frozen=True)
class Method:
    kind: str                      # "learner", "control", "training-free" or "bound"
    about: str


METHODS = Registry("comparison method", "compare.methods", {
    "reinforce_paper": Method("learner", "the paper's learner as published: REINFORCE, lr 1e-4, gate 5, the pair "
                                         "observation, the raw reward (the learner ablation grid's cell)"),
    "rloo": Method("learner", "policy gradients done better: K samples per transition, leave-one-out normalised "
                              "advantages, on the main run's settings (compare.rloo_samples)"),
    "obs_pair": Method("learner", "the paper's observation (L_{t-1}, L_t) with the residual head (the observation "
                                  "grid's cell)"),
    "constant": Method("control", "one learned latent offset that never looks at the input"),
    "latent_blend": Method("training-free", "flow-guided latent blending, b chosen on the train clips"),
    "pixel_blend": Method("training-free", "flow-guided pixel blending, b chosen on the train clips"),
    "frozen_first": Method("control", "frame 0 repeated"),
    "direct": Method("bound", "per-clip Adam on the actions against the same reward (compare.direct_steps)"),
})


def chosen(cfg) -> list:
    """The optional rows ``cfg.compare.methods`` names (() = every one), checked against ``METHODS``."""
    for name in cfg.compare.methods:
        METHODS.pick(name)
    return [m for m in METHODS if m in cfg.compare.methods] if cfg.compare.methods else list(METHODS)


def seed_runs(cfg) -> dict:
    """{seed: (config, run name)} of the main learner: run "main" for ``train.seed``, "seeds/<s>" else."""
    return {s: (cfg.override(train={"seed": s}), "main" if s == cfg.train.seed else f"seeds/{s}")
            for s in dict.fromkeys([cfg.train.seed, *cfg.train.seeds])}


def learned_methods(cfg) -> dict:
    """{method: (config, run of the first seed, setting)} of every learned row ``compare`` trains."""
    def cell(grid, name):
        return ablations(cfg.override(train={"ablation_grids": (grid,)}))[grid][name]

    configs = {
        "reinforce_paper": (lambda: cell("learner", "reinforce_paper"), "ablations/learner/reinforce_paper"),
        "rloo": (lambda: cfg.override(train={"learner": "rloo", "samples": cfg.compare.rloo_samples,
                                             "normalize_advantage": True}), "learners/rloo"),
        "obs_pair": (lambda: cell("observation", "obs_pair"), "ablations/observation/obs_pair"),
        "constant": (lambda: cfg.override(policy={"head": "constant", "observation": "pair"}), "controls/constant"),
    }
    out = {"policy": (cfg, "main", _label(cfg))}
    for m in chosen(cfg):
        if m in configs:
            c = configs[m][0]()
            out[m] = (c, configs[m][1], _label(c) + (f", K={c.train.samples}" if m == "rloo" else ""))
    for w in cfg.compare.frontier:                     # the main run is the frontier's point at its own weight
        c = cfg.override(reward={"w_temp": float(w)})
        if c != cfg:
            out[f"weights_{w:g}"] = (c, f"frontier/w{w:g}", "weights " + "/".join(
                f"{weight(c.reward, t):g}" for t in c.reward.terms))
    return out


def _label(c) -> str:
    return f"{c.train.learner}, {c.policy.head} head, {c.policy.observation} obs"


def learned_runs(cfg) -> list:
    """(method, seed, config, run) of every policy ``compare`` trains, in training order."""
    runs = []
    for method, (c, first, _) in learned_methods(cfg).items():
        seeds = list(seed_runs(c).items())
        if method != "policy" and cfg.compare.control_seeds > 0:
            seeds = seeds[:cfg.compare.control_seeds]
        for s, (cs, r) in seeds:
            runs.append((method, s, cs, r if method == "policy" else (first if r == "main" else f"{first}-s{s}")))
    return runs


def _train_cost(cfg, run: str) -> tuple:
    """(seconds, reward queries) of a run's updates, rollouts included (environment set-up not)."""
    log = read_log(paths.run_dir(cfg.profile, run))
    return (float(log["time"].sum()) if "time" in log else float("nan"),
            int(log["queries"].sum()) if "queries" in log else -1)


@torch.no_grad()
def _select_blend(cfg, kind: str, episodes: list, env) -> float:
    """The b of ``compare.blend_grid`` with the best mean reward on the (train) episodes."""
    scores = {}
    for b in cfg.compare.blend_grid:
        r = [env.reward.terms(competitors.BLENDS[kind](ep, env.stylizer, b).clamp(0, 1), ep.frames, ep.flows,
                              ep.base_terms)["reward"].mean() for ep in episodes]
        scores[b] = float(torch.stack(r).mean())
    return max(scores, key=scores.get)


def learned_rows(cfg) -> list:
    """Train (or reuse) every learned row's runs and score them on the test clips (the main run on both)."""
    settings = {m: label for m, (_, _, label) in learned_methods(cfg).items()}
    rows = []
    for method, seed, c, run in progress(learned_runs(cfg), desc="learners"):
        train(c, run=run)
        splits = ("train", "test") if run == "main" else ("test",)
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
    return rows


def training_free_rows(cfg) -> list:
    """The blends (b chosen on train windows), the frozen frame and direct optimisation on the test clips."""
    env = make_env(cfg)
    want = [m for m in chosen(cfg) if METHODS[m].kind in ("training-free", "bound") or m == "frozen_first"]
    manifest = load_manifest(cfg.profile)
    params, queries = {}, {m: 0 for m in want}                                  # reward evaluations spent
    if any(m in competitors.BLENDS for m in want):
        train_eps = []
        for cid in manifest["train"][:cfg.compare.select_clips or None]:
            ep = build_episode(cfg, cid, env)
            H, W = ep.clip.L.shape[-2:]
            k = min(cfg.train.crop or max(H, W), H, W)                         # selection on the central window
            train_eps.append(crop_episode(ep, ((H - k) // 2, (W - k) // 2, k, k), env.reward,
                                          paths.cache_dir(cfg.profile) / "terms"))
        for m in (m for m in want if m in competitors.BLENDS):
            params[m] = _select_blend(cfg, m, train_eps, env)
            queries[m] = len(cfg.compare.blend_grid) * sum(ep.n_steps for ep in train_eps)
    per, seconds = {m: [] for m in want}, {m: 0.0 for m in want}
    for cid in progress(manifest["test"], desc="competitors"):
        ep = build_episode(cfg, cid, env)
        for m in want:
            t0 = time.time()
            if m in competitors.BLENDS:
                S = competitors.BLENDS[m](ep, env.stylizer, params[m])
            elif m == "frozen_first":
                S = competitors.frozen_first(ep)
            else:
                S = competitors.direct(ep, env.stylizer, env.reward, cfg.compare.direct_steps, cfg.compare.direct_lr)
                queries[m] += cfg.compare.direct_steps * ep.n_steps
            seconds[m] += time.time() - t0
            per[m].append(clip_losses(S.clamp(0, 1), ep.frames, ep.flows, env.reward, cfg.eval.warp_error))
    rows = []
    for m in (m for m in want if per[m]):
        param = {"direct": f"{cfg.compare.direct_steps} steps, lr {cfg.compare.direct_lr:g}",
                 "frozen_first": ""}.get(m, f"b={params.get(m, '')}")
        rows.append({"method": m, "seed": None, "split": "test", "param": param, "n_clips": len(per[m]),
                     "train_s": seconds[m], "reward_queries": queries[m],
                     **pd.DataFrame(per[m])[list(METRICS)].mean().to_dict()})
    return rows


def compare(cfg) -> pd.DataFrame:
    """Score every method of the comparison on the test clips (and the main run on train);
    writes ``results/<profile>/learners.csv`` and returns it."""
    chosen(cfg)                                                                 # a bad name: one line, now
    df = pd.DataFrame(learned_rows(cfg) + training_free_rows(cfg))
    base = df[df.method == "baseline"].drop_duplicates("split").set_index("split")
    for k in ("warp_error", "style", "content"):                               # against the baseline, same split
        df[f"d_{k}"] = 100 * (df[k] / df.split.map(base[k]) - 1)
    df = df[COLUMNS]
    df["profile"] = cfg.profile
    with atomic_path(paths.ensure(paths.results_dir(cfg.profile)) / "learners.csv") as tmp:
        df.to_csv(tmp, index=False)
    return df


def ablation_table(cfg):
    """Train and evaluate every cell of ``config.ablations(cfg)``; one row per cell (test clips,
    policy with the mean action), also written to ``results/<profile>/ablations.csv``. Every cell is
    scored with ``cfg.reward``'s weights, so cells trained with other weights still compare; the
    main run's cell reuses run "main". ``d_temporal``: % change of the temporal loss vs the baseline."""
    rows = []
    for grid, runs in ablations(cfg).items():
        for setting, c in runs.items():
            run = "main" if c == cfg else f"ablations/{grid}/{setting}"
            train(c, run=run)
            t1 = evaluate(c, run=run, splits=("test",))["table1"].set_index(["method", "split"])
            pol, base = t1.loc[("policy", "test")], t1.loc[("baseline", "test")]
            rows.append({"grid": grid, "setting": setting, "lr": c.train.lr, "epochs": c.train.epochs,
                         "reward": float(weighted_reward(pol, cfg.reward, base)), "content": pol["content"],
                         "style": pol["style"], "temporal": pol["temporal"],
                         "d_temporal": 100 * (pol["temporal"] / base["temporal"] - 1)})
    df = pd.DataFrame(rows)
    with atomic_path(paths.ensure(paths.results_dir(cfg.profile)) / "ablations.csv") as tmp:
        df.assign(profile=cfg.profile).to_csv(tmp, index=False)
    return df


def summary(df) -> pd.DataFrame:
    """Mean and std over seeds of each method on the test clips (the paper's learners table)."""
    t = df[df.split == "test"]
    g = t.groupby("method", sort=False)
    out = g[["d_warp_error", "d_style", "d_content", "edge_corr"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = g.size()
    out["param"] = g["param"].first()
    out["reward_queries"] = g["reward_queries"].mean()           # per seed (deterministic: no timings here)
    return out.reset_index()


__all__ = ["compare", "summary", "ablation_table", "learned_methods", "learned_runs", "seed_runs", "METHODS", "Method", "COLUMNS"]
