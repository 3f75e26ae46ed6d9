"""Notebook-facing summaries: the banner, the tables and figures of notebook 04, the paper's numbers.

Notebooks stay thin: their first code cell is ``cfg = report.start(profile, overrides)`` and
every number or table they show comes from a function here (or in tables/figures), so a
notebook never rebuilds library logic by hand.

A run with overrides (``vst reproduce --set train.epochs=1``) is recorded in
``results/<profile>/run_config.json``; banners, figure banners and table captions then say
"reduced run", so a quick check is never mistaken for the full profile.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from vstlib import describe, paths
from vstlib.config import load
from vstlib.evaluation import figures, tables
from vstlib.evaluation.compare import learned_runs
from vstlib.files import atomic_write_json, atomic_write_text
from vstlib.rl.rewards import weight
from vstlib.rl.train import read_log
from vstlib.verify import verify

ABLATION_COLUMNS = ["grid", "setting", "reward", "content", "style", "temporal", "d_temporal"]


def banner(cfg, overrides: Sequence[str] = ()) -> str:
    """What every notebook prints first: the profile, and what its numbers are (not) worth."""
    lines = [f"profile: {cfg.profile}"]
    note = tables.run_note(cfg.profile, overrides)
    if note != tables.profile_note(cfg.profile) or cfg.profile == "smoke":
        lines.append(note)
    return "\n".join(lines)


def record_run(cfg, overrides: Sequence[str] = ()) -> None:
    """Write ``results/<profile>/run_config.json``: the overrides and the config they gave."""
    atomic_write_json(paths.run_config_path(cfg.profile),
                      {"profile": cfg.profile, "overrides": list(overrides), "config": cfg.to_dict()})


def start(profile: str, overrides: Sequence[str] = ()):
    """A notebook's first cell: resolve the config ONCE (profile + ``overrides``, device),
    record the run, print the banner; returns the config."""
    overrides = overrides.split() if isinstance(overrides, str) else list(overrides or [])
    cfg = load(profile, overrides)
    record_run(cfg, overrides)
    print(banner(cfg, overrides))
    return cfg


# --------------------------------------------------------------------------- notebook 04
def ablation_figures(abl, profile: str) -> list:
    """The ablation figures of the grids the profile ran (``train.ablation_grids``): the lr x
    epochs grid as its own figure, every other grid in one; returns the PNG paths. A figure
    whose grid did not run is removed, so no stale figure of another profile stays behind."""
    pngs = []
    lr_ep = abl[abl.grid == "lr_epochs"]
    if len(lr_ep):
        fig = figures.ablation_bars(lr_ep.assign(lr=lr_ep.lr.map("lr {:g}".format)), x="epochs", hue="lr",
                                    metrics=("reward", "temporal", "d_temporal"),
                                    title="learning rate x epochs (test clips)")
        pngs.append(figures.save(fig, "ablation_lr_epochs", profile)[0])
    else:
        figures.remove("ablation_lr_epochs", profile)
    other = abl[abl.grid != "lr_epochs"]
    if len(other):
        grids = ", ".join(dict.fromkeys(other.grid))
        fig = figures.ablation_bars(other, x="setting", hue="grid", metrics=("reward", "temporal", "d_temporal"),
                                    title=f"ablations: {grids} (test clips)")
        pngs.append(figures.save(fig, "ablation_other", profile)[0])
    else:
        figures.remove("ablation_other", profile)
    return pngs


def write_ablation_table(abl, cfg):
    """``tables/ablations.tex`` from ``compare.ablation_table``'s frame (a comment when no grid ran)."""
    if abl.empty:
        return tables.write_table("ablations", f"% no ablation grid in the {cfg.profile} profile "
                                               f"(train.ablation_grids is empty)\n", cfg.profile)
    w = "/".join(f"{weight(cfg.reward, t):g}" for t in cfg.reward.terms)
    text = tables.latex_table(
        abl.to_dict("records"), ABLATION_COLUMNS,
        f"Ablations, test clips, policy (mean action); reward with the main run's weights {w} "
        f"({'/'.join(cfg.reward.terms)}). $\\Delta$temporal: change of the temporal loss against the per-frame "
        f"baseline, \\%.",
        "tab:ablations", cfg.profile,
        headers=["Grid", "Setting", "Reward", "Content", "Style", "Temporal", "$\\Delta$Temporal"])
    return tables.write_table("ablations", text, cfg.profile)


# --------------------------------------------------------------------------- notebook 04: the comparison
COMPARISON = [("warp_indep", "Warp (indep.)"), ("warp_long", "Warp (k=5)"), ("fidelity_ssim", "MS-SSIM"),
              ("fidelity_perceptual", "Perc. dist."), ("sharpness", "Sharpness"), ("style_gram", "Style (reward)")]


def comparison_view(summary, group: str = "seen"):
    """The summary of one style group for display: each measure's change against N(I_t) with its 95 %
    interval as "delta [lo, hi]" (percent; the perceptual distance in its own units)."""
    d = summary[summary.style_group == group]
    out = d[["method", "setting", "n_clips", "n_seeds"]].copy()
    for m, _ in COMPARISON:
        out[m] = [f"{a:+.1f} [{lo:+.1f}, {hi:+.1f}]" if m != "fidelity_perceptual" else f"{a:.3f} [{lo:.3f}, {hi:.3f}]"
                  for a, lo, hi in zip(d[f"{m}_delta"], d[f"{m}_lo"], d[f"{m}_hi"])]
    return out.reset_index(drop=True)


def write_comparison_table(summary, cfg):
    """``tables/comparison.tex``: every method in the trained style and the unseen ones, each measure's
    change against N(I_t) with its paired 95 % bootstrap interval over clips and seeds."""
    rows = []
    for group in ("seen", "unseen"):
        for r in summary[summary.style_group == group].to_dict("records"):
            row = {"group": group, "method": r["method"], "setting": r["setting"] or "",
                   "n": f"{int(r['n_clips'])}x{int(r['n_seeds'])}"}
            for m, _ in COMPARISON:
                fmt = "{:.3f}" if m == "fidelity_perceptual" else "{:+.1f}"
                row[m] = f"{fmt.format(r[m + '_delta'])} [{fmt.format(r[m + '_lo'])}, {fmt.format(r[m + '_hi'])}]"
            rows.append(row)
    cols = ["group", "method", "setting", "n"] + [m for m, _ in COMPARISON]
    text = tables.latex_table(
        [{k: r[k] for k in cols} for r in rows], cols,
        "Held-out clips in the trained style (seen) and in styles the policy never saw (unseen): change against the "
        "per-frame stylization $N(I_t)$ in \\% (mean over clips and seeds, paired 95\\% bootstrap interval over clips "
        "and seeds), the perceptual distance to $N(I_t)$ in its own units. Warping errors along a flow no method uses "
        "(Farneback; consecutive frames and frames 5 apart); fidelity and sharpness against $N(I_t)$; the Gram style "
        "loss is the reward's own term. n: clips x seeds.", "tab:comparison", cfg.profile,
        headers=["Styles", "Method", "Setting", "n"] + [h for _, h in COMPARISON], wide=True)
    return tables.write_table("comparison", text, cfg.profile)


def tradeoff_figure(summary, profile: str):
    """``figures/tradeoff.png``: flicker (independent flow) against fidelity, seen and unseen styles."""
    return figures.save(figures.tradeoff(summary), "tradeoff", profile)[0]


def per_clip_figure(per_clip, profile: str):
    """``figures/per_clip.png``: the trained policy, its untrained start and the latent blend per clip."""
    return figures.save(figures.per_clip(per_clip, ["policy", "init", "bonneel"]), "per_clip", profile)[0]


def sample_efficiency_figure(cfg):
    """``figures/sample_efficiency.png``: the training reward of every learner (its seeds' logs)
    against the reward queries it spent, on the main run's reward (learners compared per query;
    their seconds are in ``costs.csv``)."""
    curves = {}
    for method, _, c, run in learned_runs(cfg):
        if method in ("policy", "reinforce_paper", "rloo"):          # the learners, not the controls
            curves.setdefault(f"{method} ({c.train.learner})", []).append(read_log(paths.run_dir(cfg.profile, run)))
    w = [weight(cfg.reward, t) for t in ("style", "content", "temporal")]
    return figures.save(figures.sample_efficiency(curves, w), "sample_efficiency", cfg.profile)[0]


# --------------------------------------------------------------------------- notebook 06
def markdown_table(df) -> str:
    """A DataFrame as a GitHub markdown table (every cell as printed)."""
    cols = list(df.columns)
    rows = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows) + "\n"


def write_summary(cfg) -> str:
    """``results/<profile>/summary.md``: what the README links (``make publish`` copies it to
    ``paper/results/summary.md``): the method of this build, what the comparison shows (paired
    differences) and the comparison itself, seen and unseen styles. Generated, never typed."""
    res = paths.results_dir(cfg.profile)
    if not (res / "eval_summary.csv").exists():
        raise FileNotFoundError(f"{res / 'eval_summary.csv'}: run notebook 04 (`vst compare`) first")
    summary, per_clip = (pd.read_csv(res / f"eval_{k}.csv", keep_default_na=False) for k in ("summary", "per_clip"))
    names = ", ".join(f"{m} ({label})" for m, label in COMPARISON)
    parts = [f"# Results of the `{cfg.profile}` profile", "",
             "Generated by notebook 06 from `results/{0}/eval_summary.csv` (do not edit; `make publish` copies it "
             "here).".format(cfg.profile), "", "## The method of this build", "", describe.method(cfg), "",
             "## What the comparison shows", "", describe.findings(summary, per_clip), "",
             "## Every method against the per-frame stylization N(I_t)", "",
             f"Each cell: the mean change against N(I_t) in % with its paired 95 % bootstrap interval over clips "
             f"and seeds (the perceptual distance in its own units). Columns: {names}.", ""]
    for group in ("seen", "unseen"):
        if (summary.style_group == group).any():
            parts += [f"### {group} style{'s' if group == 'unseen' else ''}", "",
                      markdown_table(comparison_view(summary, group))]
    text = "\n".join(parts)
    atomic_write_text(res / "summary.md", text)
    return text


def verification(cfg) -> str:
    """The last cell of the reproduction: every committed number against this run, within
    tolerance (``vstlib.verify``; report in ``results/<profile>/verification.md``)."""
    return verify(cfg.profile).line()


# --------------------------------------------------------------------------- notebook 05
def paper_numbers(cfg, table1, manifest: dict) -> dict:
    """The numbers the paper's text quotes (``\\vst<key>`` macros): settings and headline results.

    ``table1``: evaluate()'s "table1" frame; ``manifest``: the prepared clips (clips.load_manifest).
    """
    t1 = table1.set_index(["method", "split"])
    return {
        "ws": cfg.reward.w_style, "wc": cfg.reward.w_content, "wt": cfg.reward.w_temp,
        "accum": cfg.train.accumulation, "lr": f"{cfg.train.lr:g}", "epochs": cfg.train.epochs,
        "clips": len(manifest["clips"]), "frames": cfg.data.n_frames, "size": cfg.data.size,
        "framesize": (rf"${cfg.data.size}\times{cfg.data.size}$" if cfg.data.resize == "fit" else
                      f"short side {cfg.data.size} (aspect ratio kept)"),
        "ntrain": len(manifest["train"]), "ntest": len(manifest["test"]),
        "tempbase": float(t1.loc[("baseline", "test"), "temporal"]),
        "temppolicy": float(t1.loc[("policy", "test"), "temporal"]),
    }


def write_paper_outputs(cfg, table1, manifest: dict) -> list:
    """Tables 1 and 2, ``numbers.tex`` and the method paragraph of this build for the paper; returns the
    written paths."""
    return tables.write_paper_tables(cfg.profile) + [
        tables.write_numbers(paper_numbers(cfg, table1, manifest), cfg.profile), describe.write_method_tex(cfg)]


__all__ = ["banner", "record_run", "start", "write_ablation_table", "ablation_figures", "verification", "paper_numbers",
           "comparison_view", "write_comparison_table", "tradeoff_figure", "per_clip_figure",
           "write_paper_outputs", "write_summary", "markdown_table", "ABLATION_COLUMNS"]
