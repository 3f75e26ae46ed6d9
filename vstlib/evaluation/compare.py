"""The learners beside their competitors and controls, judged by the independent protocol.

    summary = compare(cfg)    # trains what is missing; results/<profile>/eval_per_clip.csv, eval_summary.csv

``METHODS`` is the one table of the comparison's optional rows; ``compare.methods`` picks them (() = all),
``compare.frontier`` adds the main learner at other temporal weights. Learned rows run on every seed of
``train.seeds`` (or the first ``compare.control_seeds`` beside the main learner); the references, the
training-free frontiers and the untrained policy come from ``evaluation.protocol``.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd

from vstlib import paths
from vstlib.backbones import make_backbone
from vstlib.config import ablations
from vstlib.evaluation.evaluate import evaluate
from vstlib.evaluation.protocol import (
    METHODS,
    chosen,
    competitor_rows,
    evaluate_methods,
    learned_rows,
)
from vstlib.executors import run_jobs
from vstlib.files import atomic_path
from vstlib.rl.episodes import build_episode, make_env
from vstlib.rl.rewards import weight, weighted_reward
from vstlib.rl.train import read_log, train
from vstlib.video.clips import load_manifest

PIXELS_PER_CELL = 4          # MicroAST's native latent is at 1/4 resolution


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
        "shac": (lambda: cfg.override(train={"learner": "shac"}), "learners/shac"),
        "distill": (lambda: cfg.override(train={"learner": "distill"}), "learners/distill"),
        # MicroAST's latent cell is 4 x 4 pixels: the same windows, in pixels
        "pixels": (lambda: cfg.override(backbone={"latent": "pixels"}, policy={"latent_channels": 3},
                                        train={"crop": cfg.train.crop * PIXELS_PER_CELL}), "where/pixels"),
        "constant": (lambda: cfg.override(policy={"head": "constant", "observation": "pair"}), "controls/constant"),
    }
    out = {"policy": (cfg, "main", _label(cfg))}
    for m in chosen(cfg):
        if m == "pixels" and cfg.backbone.name != "microast":     # a latent only MicroAST offers
            continue
        if m in configs:
            c = configs[m][0]()
            if c == cfg:                               # the main learner itself: its row is "policy"
                continue
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


def train_cost(cfg, run: str) -> tuple:
    """(seconds, reward queries) of a run's updates, rollouts included (environment set-up not)."""
    log = read_log(paths.run_dir(cfg.profile, run))
    return (float(log["time"].sum()) if "time" in log else float("nan"),
            int(log["queries"].sum()) if "queries" in log else -1)


def compare(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every learned row that is missing, then score every method on the test clips in the seen
    and unseen styles (``protocol.evaluate_methods``); returns (per-clip rows, summary)."""
    chosen(cfg)                                                                 # a bad name: one line, now
    runs = learned_runs(cfg)
    # every run seeds itself and writes its own folder: independent jobs on compare.executor
    run_jobs(cfg.compare.executor, train_job, [(c, run) for _, _, c, run in runs], desc="learners")
    return evaluate_methods(cfg, runs)


def train_job(job: tuple):
    """``train(config, run=run)`` of one (config, run) job (a finished run is only read)."""
    c, run = job
    return train(c, run=run)


def costs(cfg, refine_steps: int = 4) -> pd.DataFrame:
    """Seconds per frame of every method on the first test clip (seen style, after one warm-up clip),
    the per-frame stylization N(I_t) (uncached) included, and "policy + k refinement steps" with
    ``refine_steps`` (or ``compare.refine_steps`` when set); each learner's training wall time (its
    first seed's updates). Written to ``results/<profile>/costs.csv``; timings are reported, never
    verified (they vary run to run)."""
    runs = learned_runs(cfg)
    env = make_env(cfg)
    cid = load_manifest(cfg.profile)["test"][0]
    ep = build_episode(cfg, cid, env)
    T = ep.frames.shape[0]
    fresh = make_backbone(cfg.backbone, env.device, None)                       # no disk cache: the real cost
    fresh.stylize(ep.frames, env.style)                                          # warm-up
    t0 = time.perf_counter()
    fresh.stylize(ep.frames, env.style)
    rows = [{"method": "per_frame", "setting": "N(I_t)", "per_frame_s": (time.perf_counter() - t0) / T}]
    k = cfg.compare.refine_steps or refine_steps
    spec = cfg.override(compare={"refine_steps": k, "methods": tuple(dict.fromkeys((*chosen(cfg), "refined")))})
    first = {m: r for m, s, c, r in reversed(runs)}                             # each learned row's first seed
    for row in competitor_rows(cfg) + learned_rows(spec, [x for x in runs if first[x[0]] == x[3]]):
        t0 = time.perf_counter()
        row.frames(ep, env)
        rows.append({"method": row.method, "setting": row.setting, "per_frame_s": (time.perf_counter() - t0) / T})
    for m, s, c, r in runs:
        if first[m] == r:
            rows.append({"method": m, "setting": "training", "train_s": train_cost(cfg, r)[0]})
    df = pd.DataFrame(rows)
    with atomic_path(paths.ensure(paths.results_dir(cfg.profile)) / "costs.csv") as tmp:
        df.assign(profile=cfg.profile).to_csv(tmp, index=False)
    return df


def ablation_table(cfg):
    """Train and evaluate every cell of ``config.ablations(cfg)``; one row per cell (test clips,
    policy with the mean action), also written to ``results/<profile>/ablations.csv``. Every cell is
    scored with ``cfg.reward``'s weights, so cells trained with other weights still compare; the
    main run's cell reuses run "main". ``d_temporal``: % change of the temporal loss vs the baseline."""
    rows = []
    scored = replace(cfg.reward, terms=tuple(t for t in cfg.reward.terms if t in ("style", "content", "temporal")))
    cells = [(grid, setting, c, "main" if c == cfg else f"ablations/{grid}/{setting}")
             for grid, runs in ablations(cfg).items() for setting, c in runs.items()]
    once = {run: c for _, _, c, run in cells}                  # "main" may be a cell of several grids
    run_jobs(cfg.compare.executor, train_job, [(c, run) for run, c in once.items()], desc="grid cells")
    for grid, setting, c, run in cells:
        t1 = evaluate(c, run=run, splits=("test",))["table1"].set_index(["method", "split"])
        pol, base = t1.loc[("policy", "test")], t1.loc[("baseline", "test")]
        rows.append({"grid": grid, "setting": setting, "lr": c.train.lr, "epochs": c.train.epochs,
                     "reward": float(weighted_reward(pol, scored, base)), "content": pol["content"],
                     "style": pol["style"], "temporal": pol["temporal"],
                     "d_temporal": 100 * (pol["temporal"] / base["temporal"] - 1)})
    df = pd.DataFrame(rows, columns=["grid", "setting", "lr", "epochs", "reward", "content", "style", "temporal",
                                     "d_temporal"])                            # no grid ran: no rows
    with atomic_path(paths.ensure(paths.results_dir(cfg.profile)) / "ablations.csv") as tmp:
        df.assign(profile=cfg.profile).to_csv(tmp, index=False)
    return df


__all__ = ["compare", "costs", "train_cost", "ablation_table", "learned_methods", "learned_runs", "seed_runs", "METHODS"]
