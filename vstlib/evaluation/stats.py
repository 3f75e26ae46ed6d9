"""Paired statistics of the evaluation: each row's % change against the per-frame reference on the same
clip and style, and a 95 % bootstrap interval of the mean change that resamples clips and seeds.

    summary = summarise(per_clip)   # per (method, setting, seen/unseen styles): <metric>_delta, _lo, _hi

The bootstrap is crossed ("pigeonhole", Owen 2007, Ann. Appl. Stat.): clips and seeds are resampled
independently, because they are crossed factors, not nested ones. A seed is one training run, scored on
every clip, so a bad seed hurts all clips at once. Resampling (clip, seed) pairs as if independent
ignores that shared error, and resampling seeds within each clip lets each clip pick its own runs;
both give intervals that are too narrow. Owen shows the crossed bootstrap is mildly conservative.
With one seed it is the plain clip bootstrap.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

REFERENCE = "per_frame"
KEYS = ["method", "setting", "seed", "clip", "style", "seen_style"]
GROUP = ["method", "setting", "style_group"]
PAIR = ["clip", "style"]                 # a row and its reference stylize the same clip in the same style


def cell_means(delta: np.ndarray, clips, seeds) -> np.ndarray:
    """(n_clips, n_seeds) mean of ``delta`` per (clip, seed) cell, NaN where a cell has no row."""
    ci, _ = pd.factorize(pd.Series(clips), sort=True, use_na_sentinel=False)
    si, _ = pd.factorize(pd.Series(seeds), sort=True, use_na_sentinel=False)   # no seed (NaN) is one seed
    total = np.zeros((ci.max() + 1, si.max() + 1))
    count = np.zeros_like(total)
    np.add.at(total, (ci, si), delta)
    np.add.at(count, (ci, si), 1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def paired_bootstrap(delta, clips, seeds=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """(mean, lo, hi) of the paired changes ``delta`` (one per row; rows of one (clip, seed) cell, e.g.
    several styles, are averaged first) with its percentile interval at ``level``, by the crossed
    bootstrap of clips and seeds (module docstring). Deterministic for ``seed``."""
    delta = np.asarray(delta, dtype=float)
    seeds = np.zeros(len(delta)) if seeds is None else seeds
    M = cell_means(delta, clips, seeds)                                      # (C,S)
    rng = np.random.default_rng(seed)
    ci = rng.integers(0, M.shape[0], (n_boot, M.shape[0]))                   # (B,C) resampled clips
    si = rng.integers(0, M.shape[1], (n_boot, M.shape[1]))                   # (B,S) resampled seeds
    sub = M[ci[:, :, None], si[:, None, :]]                                  # (B,C,S)
    n = (~np.isnan(sub)).sum((1, 2))                                         # (B,) drawn cells with rows
    means = np.where(n > 0, np.nansum(sub, (1, 2)) / np.maximum(n, 1), np.nan)   # NaN: only empty cells drawn
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(means, [tail, 100 - tail])
    return float(np.nanmean(M)), float(lo), float(hi)


def paired_changes(rows: pd.DataFrame, metrics: list, reference: str = REFERENCE, absolute: tuple = ()) -> pd.DataFrame:
    """The non-reference rows with, per metric, ``<metric>_change`` = 100 (value - ref) / ref in %, ref the
    reference method's value on the same clip and style (averaged over its rows there, e.g. its seeds);
    for the ``absolute`` metrics (a distance to the reference itself, 0 there) value - ref, in their units."""
    ref = rows[rows["method"] == reference].groupby(PAIR)[metrics].mean()
    rest = rows[rows["method"] != reference]
    out = rest.merge(ref, left_on=PAIR, right_index=True, how="left", suffixes=("", "_ref"))
    missing = out[out[[f"{m}_ref" for m in metrics]].isna().any(axis=1)][PAIR].drop_duplicates()
    if len(missing):
        raise ValueError(f"no {reference!r} row for (clip, style) {missing.values.tolist()[:5]}: every row must "
                         f"be paired with the reference on the same clip and style")
    for m in metrics:
        if m in absolute:
            out[f"{m}_change"] = out[m] - out[f"{m}_ref"]
            continue
        if (out[f"{m}_ref"] == 0).any():
            raise ValueError(f"the {reference!r} value of {m!r} is 0 on some clip: a relative change is undefined")
        out[f"{m}_change"] = 100 * (out[m] - out[f"{m}_ref"]) / out[f"{m}_ref"]
    return out


def summarise(rows: pd.DataFrame, metrics: list | None = None, reference: str = REFERENCE,
              n_boot: int = 2000, seed: int = 0, absolute: tuple = ()) -> pd.DataFrame:
    """Per (method, setting, style_group "seen"/"unseen"): each metric's mean paired change against
    ``reference`` in % and its 95 % interval (``<metric>_delta``, ``_lo``, ``_hi``), ``n_clips``, ``n_seeds``.
    ``rows``: one per (method, setting, seed, clip, style) with ``seen_style`` and metric columns
    (``metrics``: default every numeric column that is not a key; ``absolute``: see ``paired_changes``)."""
    metrics = list(metrics) if metrics is not None else [
        c for c in rows.columns if c not in KEYS and pd.api.types.is_numeric_dtype(rows[c])]
    changes = paired_changes(rows, metrics, reference, absolute)
    changes["style_group"] = np.where(changes["seen_style"].astype(bool), "seen", "unseen")
    out = []
    for key, g in changes.groupby(GROUP, sort=False):
        row = dict(zip(GROUP, key))
        for m in metrics:
            mean, lo, hi = paired_bootstrap(g[f"{m}_change"], g["clip"], g["seed"], n_boot, seed)
            row.update({f"{m}_delta": mean, f"{m}_lo": lo, f"{m}_hi": hi})
        row.update(n_clips=g["clip"].nunique(), n_seeds=g["seed"].nunique(dropna=False))
        out.append(row)
    return pd.DataFrame(out)


def paired_difference(rows: pd.DataFrame, a: tuple, b: tuple, metric: str, seen: bool, reference: str = REFERENCE,
                      n_boot: int = 2000, seed: int = 0) -> tuple:
    """(mean, lo, hi) in percentage points of row ``a``'s change against ``reference`` minus row ``b``'s, on the
    same clips and styles (``a``, ``b`` = (method, setting)); ``b``'s seeds are averaged per clip and style
    first, ``a``'s are kept and resampled by the crossed bootstrap. E.g. a trained policy against its own
    untrained start, or against the best training-free method."""
    ch = paired_changes(rows[rows.seen_style.astype(bool) == seen], [metric], reference)
    pick = lambda m: ch[(ch.method == m[0]) & (ch.setting.fillna("") == m[1])]   # noqa: E731
    other = pick(b).groupby(PAIR)[f"{metric}_change"].mean().rename("other")
    d = pick(a).merge(other, left_on=PAIR, right_index=True, how="inner")
    if d.empty:
        return (float("nan"),) * 3
    return paired_bootstrap(d[f"{metric}_change"] - d["other"], d["clip"] + "/" + d["style"], d["seed"], n_boot, seed)


__all__ = ["REFERENCE", "cell_means", "paired_bootstrap", "paired_changes", "paired_difference", "summarise"]
