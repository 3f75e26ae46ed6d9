"""Paper figures: one function per figure, saved as PNG and PDF into ``results/<profile>/figures/``
(``vst publish`` copies them to the committed ``figures/``).

Every figure made on the smoke profile carries a banner saying so: its numbers check the
machinery, not the paper. Figures are closed after saving (no leaks, no notebook noise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

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


FRONTIERS = ("latent_blend", "pixel_blend", "bonneel")   # drawn as lines over their parameter


def tradeoff(summary, x: str = "fidelity_ssim", y: str = "warp_indep", title: str = ""):
    """The field's picture: flicker (``y``, % change against N(I_t) along a flow the methods never use)
    against fidelity to N(I_t) (``x``), one panel per style group (seen / unseen). Training-free methods
    as frontiers over their parameter, every other method a point with its 95 % interval on both axes."""
    plt = _plt()
    groups = [g for g in ("seen", "unseen") if g in set(summary.style_group)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.9 * len(groups) + 2.2, 4.0), sharey=True, squeeze=False)
    methods = [m for m in dict.fromkeys(summary.method) if m != "input"]   # the input's fidelity is off the chart
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for ax, group in zip(axes[0], groups):
        d = summary[summary.style_group == group]
        ax.axhline(0, color="0.3", lw=0.6), ax.axvline(0, color="0.3", lw=0.6)
        for i, m in enumerate(methods):
            g = d[d.method == m]
            if g.empty:
                continue
            if m in FRONTIERS:
                g = g.sort_values(f"{x}_delta")
                ax.plot(g[f"{x}_delta"], g[f"{y}_delta"], "-o", ms=3, lw=1, color=colour[m], label=m)
                for _, r in g.iterrows():
                    ax.annotate(r.setting.split("=")[-1], (r[f"{x}_delta"], r[f"{y}_delta"]), fontsize=6,
                                xytext=(2, 2), textcoords="offset points", color=colour[m])
                continue
            for _, r in g.iterrows():
                ax.errorbar(r[f"{x}_delta"], r[f"{y}_delta"],
                            xerr=[[r[f"{x}_delta"] - r[f"{x}_lo"]], [r[f"{x}_hi"] - r[f"{x}_delta"]]],
                            yerr=[[r[f"{y}_delta"] - r[f"{y}_lo"]], [r[f"{y}_hi"] - r[f"{y}_delta"]]],
                            fmt=MARKERS[i % len(MARKERS)], ms=5, capsize=2, lw=0.8, color=colour[m], label=m)
        ax.set_title(f"{group} style{'s' if group == 'unseen' else ''} ({int(d.n_clips.max())} clips)", fontsize=9)
        ax.set_xlabel(f"{x} change vs N(I_t) (%)")
    axes[0][0].set_ylabel(f"{y} change vs N(I_t) (%)")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title or "held-out clips: flicker (independent flow) against fidelity to the per-frame stylization",
                 fontsize=9, y=0.97)
    fig.tight_layout()
    return fig


def per_clip(rows, methods: Sequence[str], metric: str = "warp_indep", title: str = ""):
    """Per held-out clip (seen style): ``metric``'s change against N(I_t) of each of ``methods``
    (mean over its seeds), clips sorted by the first method's change."""
    plt = _plt()
    seen = rows[rows.seen_style.astype(bool)]
    ref = seen[seen.method == "per_frame"].set_index("clip")[metric]
    cols = {}
    for m in methods:
        g = seen[seen.method == m]
        if not g.empty:
            cols[m] = 100 * (g.groupby("clip")[metric].mean() / ref - 1)
    table = pd.DataFrame(cols).dropna()
    table = table.sort_values(table.columns[0])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(table) + 2), 3.6))
    width = 0.8 / max(1, len(table.columns))
    for i, m in enumerate(table.columns):
        ax.bar(np.arange(len(table)) + i * width, table[m], width, label=m, color=f"C{i}")
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xticks(np.arange(len(table)) + 0.4 - width / 2, table.index, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric} change vs N(I_t) (%)")
    ax.legend(fontsize=7)
    ax.set_title(title or f"per held-out clip, seen style: {metric}", fontsize=9)
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
    (they vary run to run, and the figure must regenerate byte for byte); ``costs.csv`` has them."""
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
