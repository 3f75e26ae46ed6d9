"""Verify a reproduction against the committed results, within a measured tolerance.

    report = verify("cpu")     # results/cpu/verification.{md,csv}; report.ok, report.line()

A reproduction never rewrites the committed results: it writes under ``results/<profile>/``, and
every number of the committed tables (``paper/tables/*.tex``, ``numbers.tex``) and of the result
CSVs they come from (``paper/results/*.csv``) is compared with the reproduced one. Bit-identity
holds on one machine and one library build only (different SIMD kernels sum in another order,
and training amplifies the rounding), so each kind of quantity has a tolerance, a small multiple
of the spread measured across kernel choices and thread counts (``docs/reproducibility.md``,
``scripts/measure_spread.py``). ``vstlib.reproduce.publish`` is the one deliberate way to change them.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vstlib import paths
from vstlib.files import atomic_path, atomic_write_text

RESULT_CSVS = ("table1.csv", "table2.csv", "ablations.csv", "eval_summary.csv", "eval_per_clip.csv")  # the tables come from them
PUBLISHED = "published.json"                                                   # which profile is committed

# Tolerances per kind of quantity: |reproduced - committed| <= abs + rel * |committed| (+ one unit of the
# last printed digit for numbers read from a LaTeX table). A kind is what a number is (a change in
# percentage points, a raw metric, a count...) and, for changes and metrics, its family: a policy's
# Gram style loss moves more with the kernels than its warping error (training amplifies rounding
# differently). Measured spread and the ratio to the effects claimed: docs/reproducibility.md.
TOLERANCE = {
    "change/warp": (0.5, 0.0),       # percentage points against a reference (and std over seeds)
    "change/style": (1.5, 0.0),
    "change/fidelity": (0.5, 0.0),
    "change/other": (0.5, 0.0),
    "metric/warp": (3e-5, 1e-2),     # raw losses, errors, similarities: relative, with a floor for near-zero values
    "metric/style": (1e-9, 2e-2),
    "metric/fidelity": (5e-4, 1e-2),
    "metric/other": (1e-9, 5e-3),
    "count": (0.0, 0.0),             # clips, seeds, reward queries: exact
    "setting": (0.0, 0.0),           # weights, learning rate, epochs quoted by the paper: exact
    "text": (0.0, 0.0),              # labels: exact
}
FAMILIES = (("warp", ("warp", "temp", "flicker")), ("style", ("style", "gram")),
            ("fidelity", ("content", "fidelity", "ssim", "perceptual", "perc. dist", "sharp", "edge")))
SKIPPED = ("time",)            # wall-clock seconds vary run to run: reported, never compared
KEY_COLUMNS = ("method", "setting", "param", "seed", "split", "clip", "style", "seen_style", "grid",
               "embedder", "profile", "note")
COUNT_COLUMNS = {"n_clips", "n_seeds", "n_frames", "seeds", "reward_queries", "queries", "epochs", "epoch",
                 "accum", "clips", "frames", "size", "ntrain", "ntest"}
SETTING_NUMBERS = {"ws", "wc", "wt", "lr", "accum", "epochs", "clips", "frames", "size", "ntrain", "ntest",
                   "framesize", "profile"}
NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
INTERVAL = re.compile(r"^([-+]?\d+\.\d+) \[([-+]?\d+\.\d+), ([-+]?\d+\.\d+)\]$")


def kind_of(column: str) -> str:
    """The kind of quantity a column (CSV name, LaTeX header or ``numbers.tex`` macro) holds."""
    c = column.strip().lower()
    if c.endswith("_s") or c in ("time", "seconds"):
        return "time"
    if c in COUNT_COLUMNS:
        return "count"
    family = next((f for f, words in FAMILIES if any(w in c for w in words)), "other")
    if (c.startswith("d_") or "\\delta" in c or c.endswith(("std", "_delta", "_lo", "_hi"))):
        return f"change/{family}"
    return f"metric/{family}"


@dataclass(frozen=True)
class Number:
    source: str            # e.g. "tables/table1.tex", "results/learners.csv"
    row: str               # the row's key cells, joined by "/"
    column: str
    value: object          # float, or str for labels
    kind: str
    resolution: float = 0.0   # one unit of the last printed digit (LaTeX tables), 0 for CSVs

    @property
    def id(self) -> str:
        return f"{self.source}:{self.row}:{self.column}"


# --------------------------------------------------------------------------- reading numbers
def _cell(text: str):
    """A LaTeX cell -> float (bold unwrapped, "--" = NaN) or the label as text."""
    t = re.sub(r"\\textbf\{(.*)\}", r"\1", text.strip())
    if t == "--":
        return math.nan
    return float(t) if NUMBER.match(t) else t


def _resolution(text: str) -> float:
    t = re.sub(r"\\textbf\{(.*)\}", r"\1", text.strip())
    m = re.match(r"^-?\d+\.(\d+)$", t)
    return 10.0 ** -len(m.group(1)) if m else (1.0 if re.match(r"^-?\d+$", t) else 0.0)


def table_numbers(tex: str, source: str) -> list[Number]:
    """Every body cell of a generated booktabs table (``tables.latex_table``), keyed by the row's
    first two cells and the column header."""
    head, body = tex.split(r"\midrule", 1)
    header = [h.strip() for h in head.split(r"\toprule", 1)[1].strip().rstrip("\\").split(" & ")]
    out, seen = [], {}
    for line in body.split(r"\bottomrule", 1)[0].strip().splitlines():
        cells = [c.strip() for c in line.strip().rstrip("\\").rstrip().split(" & ")]
        row = "/".join(str(_cell(c)) for c in cells[:2])
        seen[row] = seen.get(row, 0) + 1
        row = row if seen[row] == 1 else f"{row}#{seen[row]}"
        for i, (col, cell) in enumerate(zip(header[2:], cells[2:]), start=2):
            m = INTERVAL.match(cell)
            if m:                                      # "delta [lo, hi]": three numbers of the comparison table
                # a change in points against N(I_t); the perceptual distance is a metric in its own units
                kind = kind_of(col) if "dist" in col.lower() else kind_of(col + "_delta")
                out += [Number(source, row, col + suffix, float(t), kind, _resolution(t))
                        for suffix, t in zip(("", " lo", " hi"), m.groups())]
                continue
            v = _cell(cell)
            family = header[i - 1] if col == "std" else col               # a std column is its left neighbour's
            kind = "text" if isinstance(v, str) else kind_of(family + (" std" if col == "std" else ""))
            out.append(Number(source, row, col, v, kind, _resolution(cell)))
    return out


def macro_numbers(tex: str, source: str) -> list[Number]:
    """``\\newcommand{\\vst<key>}{value}`` lines of ``numbers.tex``."""
    out = []
    for key, raw in re.findall(r"\\newcommand\{\\vst([a-zA-Z]+)\}\{(.*)\}\s*$", tex, flags=re.M):
        v = _cell(raw)
        kind = "text" if isinstance(v, str) else ("setting" if key in SETTING_NUMBERS else kind_of(key))
        out.append(Number(source, "numbers", key, v, kind, _resolution(raw)))
    return out


def csv_numbers(path: Path, source: str) -> list[Number]:
    """Every cell of a result CSV but its labels, keyed by the label columns (``KEY_COLUMNS`` present)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    def numeric(col):
        return all(NUMBER.match(r[col].strip()) or r[col] in ("", "nan", "NaN") for r in rows)

    # label columns are keys; "style" is a key where it names the painting, a value where it is a loss
    labels = [k for k in KEY_COLUMNS if k in rows[0] and (k == "seed" or not numeric(k))]
    keys = [k for k in labels if k not in ("note", "profile")]
    out, seen = [], {}
    for r in rows:
        row = "/".join(r[k] for k in keys)
        seen[row] = seen.get(row, 0) + 1
        row = row if seen[row] == 1 else f"{row}#{seen[row]}"
        for col, raw in r.items():
            if col in labels:
                continue
            v = math.nan if raw in ("", "nan", "NaN") else (float(raw) if NUMBER.match(raw.strip()) else raw)
            out.append(Number(source, row, col, v, "text" if isinstance(v, str) else kind_of(col)))
    return out


def collect(tables: Path, csvs: Path) -> dict[str, Number]:
    """{id: Number} of every table in ``tables`` and every result CSV in ``csvs``."""
    nums: list[Number] = []
    for p in sorted(Path(tables).glob("*.tex")):
        text = p.read_text()
        src = f"tables/{p.name}"
        if p.name == "numbers.tex":
            nums += macro_numbers(text, src)
        elif r"\midrule" in text:
            nums += table_numbers(text, src)
        else:                                   # generated prose (tables/method.tex): the same text
            nums.append(Number(src, "text", "", " ".join(text.split()), "text"))
    for name in RESULT_CSVS:
        if (Path(csvs) / name).exists():
            nums += csv_numbers(Path(csvs) / name, f"results/{name}")
    return {n.id: n for n in nums}


# --------------------------------------------------------------------------- comparing
@dataclass
class Check:
    id: str
    kind: str
    committed: object
    reproduced: object
    tolerance: float
    ok: bool
    why: str = ""

    @property
    def deviation(self) -> float:
        try:
            return abs(float(self.reproduced) - float(self.committed))
        except (TypeError, ValueError):
            return math.nan


def compare_number(ref: Number, new: Optional[Number], tolerance: dict = TOLERANCE) -> Check:
    """One committed number against its reproduction."""
    if new is None:
        return Check(ref.id, ref.kind, ref.value, None, 0.0, False, "missing from the reproduction")
    if ref.kind == "text" or isinstance(ref.value, str) or isinstance(new.value, str):
        return Check(ref.id, ref.kind, ref.value, new.value, 0.0, ref.value == new.value,
                     "" if ref.value == new.value else "label differs")
    a, b = float(ref.value), float(new.value)
    if math.isnan(a) or math.isnan(b):
        same = math.isnan(a) and math.isnan(b)
        return Check(ref.id, ref.kind, a, b, 0.0, same, "" if same else "one side is not a number")
    absolute, relative = tolerance[ref.kind]
    tol = absolute + relative * abs(a) + max(ref.resolution, new.resolution)
    ok = abs(b - a) <= tol
    return Check(ref.id, ref.kind, a, b, tol, ok, "" if ok else "out of tolerance")


@dataclass
class Report:
    profile: str
    checks: list = field(default_factory=list)
    skipped: int = 0                  # numbers never compared (wall-clock times)
    new: list = field(default_factory=list)   # reproduced numbers with nothing committed beside them
    note: str = ""                    # why nothing was verified (no committed results of this profile)

    @property
    def failed(self) -> list:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        """The one-line summary (``vst reproduce`` ends with it)."""
        where = paths.verification_path(self.profile).relative_to(paths.home()) if self.checks else None
        if self.note:
            return f"verification: {self.note}"
        n = len(self.checks)
        if self.ok:
            return f"verification: all {n} committed numbers reproduced within tolerance ({where})"
        worst = ", ".join(f"{c.id} ({_fmt(c.committed)} -> {_fmt(c.reproduced)})" for c in self.failed[:3])
        more = f" and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
        return f"verification FAILED: {len(self.failed)} of {n} numbers out of tolerance: {worst}{more} ({where})"


def _fmt(v) -> str:
    return "missing" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def published_profile() -> Optional[str]:
    """The profile whose results are committed (``paper/results/published.json``), or None."""
    try:
        return json.loads((paths.PAPER_RESULTS / PUBLISHED).read_text())["profile"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify(profile: str, tolerance: dict = TOLERANCE, write: bool = True) -> Report:
    """Compare the reproduction of ``profile`` (``results/<profile>/``) with the committed results;
    write ``verification.md`` and ``.csv`` beside it."""
    if published_profile() != profile:
        return Report(profile, note=f"no committed results of profile {profile!r} to verify against "
                                    f"(committed: {published_profile()!r})")
    ref = collect(paths.TABLES, paths.PAPER_RESULTS)
    new = collect(paths.tables_dir(profile), paths.results_dir(profile))
    rep = Report(profile)
    for key, num in ref.items():
        if num.kind in SKIPPED:
            rep.skipped += 1
            continue
        rep.checks.append(compare_number(num, new.get(key), tolerance))
    rep.new = sorted(k for k, n in new.items() if k not in ref and n.kind not in SKIPPED)
    if write:
        write_report(rep, tolerance)
    return rep


def write_report(rep: Report, tolerance: dict = TOLERANCE) -> None:
    rows = sorted(rep.checks, key=lambda c: (c.ok, c.id))              # failures first
    with atomic_path(paths.ensure(paths.results_dir(rep.profile)) / "verification.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "kind", "committed", "reproduced", "abs_dev", "rel_dev", "tolerance", "pass", "why"])
            for c in rows:
                w.writerow([c.id, c.kind, c.committed, c.reproduced, c.deviation, _rel(c), c.tolerance, c.ok, c.why])
    tol = "; ".join(f"{k}: {a:g} abs + {r:g} rel" for k, (a, r) in tolerance.items())
    lines = [f"# Verification of the `{rep.profile}` reproduction against the committed results", "",
             rep.line(), "",
             f"Tolerances (|reproduced - committed| <= abs + rel x |committed|, plus one unit of the last "
             f"printed digit for LaTeX tables): {tol}. Wall-clock times are not compared ({rep.skipped} "
             f"numbers). Measured spread: docs/reproducibility.md.", ""]
    if rep.new:
        lines += [f"{len(rep.new)} reproduced numbers have nothing committed beside them "
                  f"(new rows or columns), e.g. {', '.join(rep.new[:5])}.", ""]
    lines += ["| number | kind | committed | reproduced | abs dev | rel dev | tolerance | pass |",
              "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| `{c.id}` | {c.kind} | {_fmt(c.committed)} | {_fmt(c.reproduced)} | {_fmt(c.deviation)} | "
                     f"{_fmt(_rel(c))} | {_fmt(c.tolerance)} | {'yes' if c.ok else '**NO** ' + c.why} |")
    atomic_write_text(paths.verification_path(rep.profile), "\n".join(lines) + "\n")


def _rel(c: Check) -> float:
    try:
        return abs(float(c.reproduced) - float(c.committed)) / max(abs(float(c.committed)), 1e-12)
    except (TypeError, ValueError):
        return math.nan


__all__ = ["verify", "collect", "compare_number", "table_numbers", "macro_numbers", "csv_numbers",
           "kind_of", "Number", "Check", "Report", "TOLERANCE", "RESULT_CSVS", "PUBLISHED", "published_profile"]
