"""Regenerate the measured tables of docs/performance.md from the benchmarks' JSON records.

    python benchmarks/stylize.py --frames 16 100 1000      # writes results/cpu/bench/stylize.json
    python scripts/performance_table.py [--profile cpu]    # rewrites the block between the markers

Figures are never typed by hand: the block between ``<!-- bench:stylize -->`` and ``<!-- /bench -->``
is replaced by a table of the record (machine, date and torch version included).
"""
from __future__ import annotations

import argparse
import json
import re
import sys

from vstlib import paths
from vstlib.files import atomic_write_text

DOC = paths.ROOT / "docs" / "performance.md"
BLOCK = re.compile(r"(<!-- bench:stylize -->\n).*?(<!-- /bench -->)", re.S)


def stylize_table(rec: dict) -> str:
    stages = sorted({k for r in rec["runs"] for p in ("per_frame", "consistent") for k in r[p]["s_per_frame"]})
    head = ("| frames | path | " + " | ".join(f"{s} (s/frame)" for s in stages)
            + " | frames/s | peak RSS (MB) | consistent / per-frame |")
    lines = [f"`benchmarks/stylize.py`, profile `{rec['profile']}`, {rec['threads']} threads, chunk {rec['chunk']}, "
             f"clip `{rec['clip'].split('/')[-1]}` (looped), {rec['machine']}, torch {rec['torch']}, {rec['date']}.", "",
             head, "|" + "---|" * (len(stages) + 5)]
    for r in rec["runs"]:
        for name, key in (("per-frame N(I_t)", "per_frame"), ("with the policy", "consistent")):
            p = r[key]
            cells = " | ".join(f"{p['s_per_frame'][s]:.4f}" if s in p["s_per_frame"] else "" for s in stages)
            ratio = f"{r['ratio']:.2f}x" if key == "consistent" else ""
            lines.append(f"| {r['frames']} ({p['size'][0]}x{p['size'][1]}) | {name} | {cells} | "
                         f"{p['frames_per_s']:.2f} | {p['peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    src = paths.results_dir(args.profile) / "bench" / "stylize.json"
    if not src.exists():
        print(f"{src}: no record; run `python benchmarks/stylize.py --profile {args.profile}` first", file=sys.stderr)
        return 1
    text = DOC.read_text()
    if not BLOCK.search(text):
        print(f"{DOC}: the markers <!-- bench:stylize --> ... <!-- /bench --> are missing", file=sys.stderr)
        return 1
    table = stylize_table(json.loads(src.read_text()))
    atomic_write_text(DOC, BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
