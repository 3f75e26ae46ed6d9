"""Paper figures: one function per figure, saved as PNG and PDF into ``results/<profile>/figures/``
(``vst publish`` copies them to the committed ``figures/``).

Every figure made on the smoke profile carries a banner saying so: its numbers check the
machinery, not the paper. Figures are closed after saving (no leaks, no notebook noise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vstlib import paths
from vstlib.evaluation.tables import marked

SMOOTH = 5  # moving-average window of the training curves (updates)


def _plt():
    import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg by itself

    return plt


def to_numpy_image(x) -> np.ndarray:
    """(3,H,W) / (H,W,3) tensor or array in [0,1] or uint8 -> (H,W,3) float in [0,1]."""
    a = x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype == np.uint8:
        a = a / 255.0
    return np.clip(a, 0, 1)


def flow_to_rgb(flow) -> np.ndarray:
    """(2,H,W) flow -> (H,W,3) colour-wheel image (torchvision's flow_to_image)."""
    import torch
    from torchvision.utils import flow_to_image

    f = flow if isinstance(flow, torch.Tensor) else torch.as_tensor(np.asarray(flow))
    return flow_to_image(f.float()).permute(1, 2, 0).numpy() / 255.0


def save(fig, name: str, profile: str) -> list[Path]:
    """Save ``fig`` as <name>.png and .pdf in ``paths.figures_dir(profile)`` (reproducible bytes),
    with the profile banner."""
    plt = _plt()
    note = marked(profile)                                # smoke, or a reduced run (overrides)
    if note:
        fig.text(0.5, 0.995, note, ha="center", va="top", fontsize=7, color="crimson")
    out = paths.ensure(paths.figures_dir(profile))
    files = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(files[0], dpi=110, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(files[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return files


def remove(name: str, profile: str) -> None:
    """Delete <name>.png and .pdf of a reproduction (a figure the current profile does not make)."""
    for suffix in (".png", ".pdf"):
        (paths.figures_dir(profile) / f"{name}{suffix}").unlink(missing_ok=True)


def image_grid(rows: Mapping[str, Sequence], col_labels: Sequence[str] | None = None, cell: float = 1.4):
    """A grid of images: one row per label, one column per frame."""
    plt = _plt()
    n_rows, n_cols = len(rows), max(len(v) for v in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows + 0.3), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(images):
                ax.imshow(to_numpy_image(images[c]))
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0 and col_labels is not None and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
    fig.tight_layout()
    return fig


def data_examples(frames, fw, mask_fw, clip_id: str, n: int = 4):
    """Frames of a clip with their forward flow and occlusion mask (notebook 01)."""
    n = min(n, len(fw))
    mask_rgb = [np.repeat(to_numpy_image(m)[..., :1], 3, axis=-1) for m in mask_fw[:n]]
    return image_grid({"frame t": [frames[t] for t in range(n)],
                       "flow t->t+1": [flow_to_rgb(fw[t]) for t in range(n)],
                       "visible (fw-bw)": mask_rgb},
                      col_labels=[f"{clip_id} t={t}" for t in range(n)])


def training_curves(log: Sequence[dict], title: str = "", window: int = SMOOTH):
    """Paper Figure 6: reward and the three loss terms over updates, policy vs baseline."""
    import pandas as pd

    plt = _plt()
    df = pd.DataFrame([r for r in log if not r.get("skipped")])
    if "base_reward" not in df and "advantage" in df:  # advantage = r(policy) - r(baseline)
        df["base_reward"] = df["reward"] - df["advantage"]
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    for ax, key in zip(axes, ["reward", "content", "style", "temporal"]):
        pol = df[key] if key in df else df.get(f"policy_{key}")
        base_key = "base_reward" if key == "reward" else f"base_{key}"
        ax.plot(df["step"], pol.rolling(window, min_periods=1).mean(), label="policy")
        if base_key in df:
            ax.plot(df["step"], df[base_key].rolling(window, min_periods=1).mean(), label="baseline", ls="--")
        ax.set_title(key), ax.set_xlabel("update")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, y=1.06, fontsize=9)
    fig.tight_layout()
    return fig


def zoom_crops(rows: Mapping[str, Sequence], box: tuple[int, int, int, int], cell: float = 1.8):
    """Paper Figure 4: the same crop (y0, x0, h, w) of consecutive frames, upsampled."""
    y0, x0, h, w = box
    cropped = {k: [to_numpy_image(im)[y0:y0 + h, x0:x0 + w] for im in v] for k, v in rows.items()}
    return image_grid(cropped, col_labels=[f"t={t}" for t in range(max(map(len, rows.values())))], cell=cell)


def flicker(curves: Mapping[str, Sequence[float]], clip_id: str, title: str = ""):
    """Per-frame warping error over time (one line per method: input, per-frame, baseline, policy)
    on one clip: the input is the flicker floor; curves from ``evaluate.flicker_curves``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    styles = {"input": dict(color="0.4", ls=":"), "per-frame": dict(ls="--")}
    for method, values in curves.items():
        v = np.asarray(values, dtype=float)                                  # (T-1,) pairs t-1 -> t
        ax.plot(np.arange(1, len(v) + 1), v, marker="o", ms=3, label=method, **styles.get(method, {}))
    ax.set_xlabel("frame t (pair t-1, t)"), ax.set_ylabel("warping error")
    ax.set_title(title or f"flicker on {clip_id}", fontsize=9)
    ax.legend(fontsize=7, ncol=len(curves))
    fig.tight_layout()
    return fig


def ablation_bars(df, x: str, metrics: Sequence[str] = ("reward", "content", "style", "temporal"),
                  hue: str | None = None, title: str = ""):
    """One panel per metric, one bar per ablation setting (notebook 04)."""
    import seaborn as sns

    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        sns.barplot(data=df, x=x, y=m, hue=hue, ax=ax, errorbar=None)
        ax.set_title(m, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.set_xlabel("")
        if hue and ax.get_legend() is not None and m != metrics[0]:
            ax.get_legend().remove()
    if title:
        fig.suptitle(title, y=1.04, fontsize=9)
    fig.tight_layout()
    return fig


MARKERS = "osD^vP*Xh"  # 9 markers against 10 colours: 90 distinct pairs


def pareto(df, title: str = ""):
    """Warping-error change against style change and against content change (% of the per-frame
    baseline, test clips): one marker per method, mean +- std over seeds, the seeds as dots; the
    main learner's points over the temporal weight (rows weights_<w>) joined as its frontier; the
    goal region (warp <= -30 %, style / content <= +5 %) shaded."""
    plt = _plt()
    t = df[(df.split == "test") & (df.method != "baseline")]
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.9), sharey=True)
    means = t.groupby("method", sort=False)[["d_warp_error", "d_style", "d_content"]].mean()
    front = [m for m in means.index if m == "policy" or m.startswith("weights_")]
    w_temp = {m: float(t[t.method == m]["param"].iloc[0].split("/")[-1]) if m != "policy" else None for m in front}
    lo = min(-40.0, float(t["d_warp_error"].min()) - 5)
    for ax, key, name in ((axes[0], "d_style", "style loss"), (axes[1], "d_content", "content loss")):
        ax.axhline(-30, color="0.6", lw=0.8, ls="--", zorder=1)
        ax.axvline(5, color="0.6", lw=0.8, ls="--", zorder=1)
        ax.axhline(0, color="0.3", lw=0.6), ax.axvline(0, color="0.3", lw=0.6)
        for i, (method, g) in enumerate(t.groupby("method", sort=False)):
            x, y = g[key].astype(float), g["d_warp_error"].astype(float)
            err = dict(xerr=x.std(), yerr=y.std()) if len(g) > 1 else {}
            label = f"{method} ({len(g)} seeds)" if len(g) > 1 else method
            # colour and marker both cycle, so 13+ methods stay distinguishable (10 colours alone repeat)
            ax.errorbar(x.mean(), y.mean(), fmt=MARKERS[i % len(MARKERS)], ms=5, capsize=3, color=f"C{i % 10}",
                        label=label, **err)
            if len(g) > 1:
                ax.scatter(x, y, s=9, color=f"C{i % 10}", alpha=0.5)
        if len(front) > 1:                                   # the frontier, in order of the temporal weight
            order = sorted(front, key=lambda m: means.loc[m, "d_warp_error"])
            ax.plot(means.loc[order, key], means.loc[order, "d_warp_error"], color="0.4", lw=0.8, zorder=1,
                    label="frontier over the temporal weight")
            for m in front:
                if w_temp[m] is not None:
                    ax.annotate(f"w={w_temp[m]:g}", (means.loc[m, key], means.loc[m, "d_warp_error"]),
                                fontsize=6, xytext=(3, 3), textcoords="offset points")
        xs = t[key].astype(float)
        ax.set_xlim(min(-20.0, float(xs.min()) - 5), max(20.0, float(xs.max()) + 5))
        ax.set_ylim(lo, max(10.0, float(t["d_warp_error"].max()) + 5))
        x0, y0 = ax.get_xlim()[0], ax.get_ylim()[0]
        ax.add_patch(plt.Rectangle((x0, y0), 5 - x0, -30 - y0, color="0.9", zorder=0))   # the goal region
        ax.set_xlabel(f"{name} change vs per-frame baseline (%)")
    axes[0].set_ylabel("warping error change (%)")
    fig.suptitle(title or "held-out clips: flicker vs style and vs content (goal: shaded)", fontsize=9)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def sample_efficiency(curves: Mapping[str, Sequence], weights: Sequence[float], title: str = ""):
    """Training reward against reward queries spent, one line per learner (mean over its seeds).

    ``curves``: {method: [training log per seed]} (train.read_log frames). Every learner is read
    with ONE reward, ``weights`` (style, content, temporal) on terms divided by the per-frame
    baseline's on the same frames, so the paper's raw-reward learner and the normalised ones
    share an axis: 0 is the baseline, higher is better. One point per clip visit (the updates of
    one pass over a clip averaged): a REINFORCE learner renders a whole clip before its updates,
    a pathwise one renders as it goes, so only whole visits compare. Seconds are not plotted
    (they vary run to run, and the figure must regenerate byte for byte); ``learners.csv`` has them."""
    plt = _plt()
    ws, wc, wt = weights
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for i, (method, logs) in enumerate(curves.items()):
        per_seed = []
        for log in logs:
            visit = ((log["clip"] != log["clip"].shift()) | (log["epoch"] != log["epoch"].shift())).cumsum()
            x = log["queries"].groupby(visit).sum().cumsum().to_numpy()          # skipped updates spent them too
            gain = -(ws * (log["style"] / log["base_style"] - 1) + wc * (log["content"] / log["base_content"] - 1)
                     + wt * (log["temporal"] / log["base_temporal"] - 1))
            if "skipped" in log:                                                 # ...but taught nothing
                gain = gain.where(~log["skipped"].astype(bool))
            per_seed.append((x, gain.groupby(visit).mean().to_numpy()))
        if not per_seed:
            continue
        n = min(len(x) for x, _ in per_seed)
        y = np.mean([g[:n] for _, g in per_seed], axis=0)
        ax.plot(per_seed[0][0][:n], y, "o-", ms=3, color=f"C{i % 10}", lw=1.2, label=f"{method} ({len(per_seed)} seeds)")
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xlabel("reward queries (frames rendered and scored)")
    ax.set_ylabel(f"reward gain over the baseline\n(normalised, {ws:g}/{wc:g}/{wt:g}; per clip visit)")
    ax.set_title(title or "sample efficiency on the training windows", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
