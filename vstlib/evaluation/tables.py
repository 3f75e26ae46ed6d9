"""Paper tables generated from result CSVs (never typed by hand), written to
``results/<profile>/tables/`` (``vst publish`` copies them to the committed ``paper/tables/``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from vstlib import paths
from vstlib.config import result_overrides
from vstlib.files import atomic_write_text
from vstlib.hub import weights_are_standin

SMOKE_NOTE = ("smoke profile: tiny randomly initialised models on synthetic clips; "
              "these numbers check the machinery, not the paper")


def profile_note(profile: str) -> str:
    note = SMOKE_NOTE if profile == "smoke" else f"{profile} profile"
    # a rehearsal on random stand-in weights must never pass for a result
    return f"STAND-IN WEIGHTS, not results; {note}" if profile != "smoke" and weights_are_standin() else note


def recorded_overrides(profile: str) -> list[str]:
    """The ``--set`` overrides of the last recorded run of ``profile`` (report.start) that can change a
    number (``config.RUNTIME_SETTINGS``, e.g. the executor, left out), or []."""
    import json

    try:
        return result_overrides(json.loads(paths.run_config_path(profile).read_text()).get("overrides") or [])
    except (OSError, ValueError, AttributeError):
        return []


def run_note(profile: str, overrides: Sequence[str] | None = None) -> str:
    """The profile note, plus "reduced run: ..." when overrides changed the preset.

    ``overrides`` None: those recorded in ``results/<profile>/run_config.json``. Captions and
    figure banners carry it, so a quick run is never mistaken for the full profile.
    """
    overrides = recorded_overrides(profile) if overrides is None else result_overrides(overrides)
    note = profile_note(profile)
    return f"{note}; reduced run: {' '.join(overrides)}" if overrides else note


def marked(profile: str) -> str | None:
    """The note to print on a table or figure of ``profile`` (None: a full non-smoke run)."""
    note = run_note(profile)
    return note if profile == "smoke" or note != profile_note(profile) else None


def _fmt(v, digits: int) -> str:
    if isinstance(v, str):
        return v.replace("_", r"\_")
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "--"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"


def latex_table(rows: Sequence[dict], columns: Sequence[str], caption: str, label: str,
                profile: str, headers: Sequence[str] | None = None, digits: int = 4,
                best: dict | None = None, wide: bool = False) -> str:
    """A booktabs table; ``best`` maps column -> "min"/"max" to bold the best value per split;
    ``wide``: scaled down to the text width (many columns of intervals)."""
    headers = list(headers or columns)
    bold = set()
    for col, how in (best or {}).items():
        for split in {r.get("split") for r in rows}:
            group = [i for i, r in enumerate(rows) if r.get("split") == split]
            vals = [(rows[i][col], i) for i in group if isinstance(rows[i][col], (int, float))]
            if len(vals) > 1:
                bold.add((min(vals)[1] if how == "min" else max(vals)[1], col))
    lines = [r"\begin{table}[t]", r"\centering", r"\small"] + ([r"\resizebox{\linewidth}{!}{%"] if wide else []) + [
             r"\begin{tabular}{" + "l" * 2 + "r" * (len(columns) - 2) + "}", r"\toprule",
             " & ".join(headers) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        cells = []
        for c in columns:
            s = _fmt(r[c], digits)
            cells.append(rf"\textbf{{{s}}}" if (i, c) in bold else s)
        lines.append(" & ".join(cells) + r" \\")
    note = marked(profile)
    cap = caption + (rf" \emph{{[{_fmt(note, digits)}]}}" if note else "")
    lines += [r"\bottomrule", r"\end{tabular}"] + (["}"] if wide else []) + [rf"\caption{{{cap}}}", rf"\label{{{label}}}",
              r"\end{table}", ""]
    return "\n".join(lines)


def write_table(name: str, text: str, profile: str) -> Path:
    return atomic_write_text(paths.ensure(paths.tables_dir(profile)) / f"{name}.tex", text)


def write_paper_tables(profile: str) -> list[Path]:
    """Table 1 (losses) and Table 2 (CLIP similarities) from ``results/<profile>/table*.csv``."""
    import pandas as pd

    res = paths.results_dir(profile)
    t1 = pd.read_csv(res / "table1.csv").to_dict("records")
    t2 = pd.read_csv(res / "table2.csv").to_dict("records")
    cols1 = ["method", "split", "content", "style", "temporal"] + (["warp_error"] if "warp_error" in t1[0] else [])
    out = [write_table("table1", profile=profile, text=latex_table(
        t1, cols1, "The reward's own terms (lower is better; what the method optimises, not the independent "
        "judge of Table~\\ref{tab:comparison}): perceptual content loss, Gram style loss, bidirectional temporal "
        "loss, and the warping error of Lai et al.\\ (2018) along the method's own flow; the input, the per-frame "
        "stylization (baseline) and the trained policy (mean action).", "tab:losses", profile,
        headers=["Method", "Split", "Content", "Style", "Temporal"] + (["Warp err."] if len(cols1) > 5 else []),
        best={c: "min" for c in cols1[2:]}))]
    embedder = t2[0].get("embedder", "CLIP") if t2 else "CLIP"          # from the CSV, never the profile
    out.append(write_table("table2", profile=profile, text=latex_table(
        t2, ["method", "split", "content", "style", "temporal"],
        f"Cosine similarities of {embedder} image embeddings (higher is better): stylized vs. original frame (content), vs. the "
        "style image (style) and between consecutive stylized frames (temporal).", "tab:clip", profile,
        headers=["Method", "Split", "Content", "Style", "Temporal"],
        best={c: "max" for c in ("content", "style", "temporal")})))
    return out


def write_numbers(numbers: dict, profile: str) -> Path:
    """``paper/tables/numbers.tex``: one ``\\newcommand`` per number the text quotes.

    Keys become macro names ``\\vst<key>`` (letters only, as LaTeX requires).
    """
    note = run_note(profile)
    lines = [f"% generated by vstlib.evaluation.tables.write_numbers ({note}); do not edit",
             rf"\newcommand{{\vstprofile}}{{{_fmt(note, 4)}}}"]
    for key, value in sorted(numbers.items()):
        if not key.isalpha():
            raise ValueError(f"macro name must be letters only: {key!r}")
        lines.append(rf"\newcommand{{\vst{key}}}{{{_fmt(value, 4) if not isinstance(value, str) else value}}}")
    return atomic_write_text(paths.ensure(paths.tables_dir(profile)) / "numbers.tex", "\n".join(lines) + "\n")
