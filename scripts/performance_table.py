"""Regenerate the measured tables of docs/performance.md from the benchmarks' JSON records.

    python benchmarks/stylize.py --frames 16 100 1000      # writes results/cpu/bench/stylize.json
    python scripts/performance_table.py [--profile cpu ...]   # rewrites every block between the markers

Figures are never typed by hand: for each script ``benchmarks/<name>.py`` the block between
``<!-- bench:<name> -->`` and ``<!-- /bench -->`` is replaced by one table per record
``results/<profile>/bench/<name>.json`` present (``vstlib.bench``; every profile, or those given),
headed by the command that produced it and the machine, date and torch version; a benchmark
without a record gets a line saying how to make one.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from vstlib import bench, paths
from vstlib.files import atomic_write_text

DOC = paths.ROOT / "docs" / "performance.md"
BENCH = paths.ROOT / "benchmarks"


def block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench -->)", re.S)


def num(v: float) -> str:
    """Four significant digits, never scientific notation for the seconds a benchmark sees."""
    return f"{v:.4f}" if v < 1 else f"{v:.4g}" if v < 1e4 else f"{v:.0f}"


# columns a benchmark adds to its runs' table: (header, run -> cell)
EXTRA = {
    "stylize": [("consistent / per-frame", lambda r: f"{r['ratio']:.2f}x" if "ratio" in r else "")],
    "backbone": [("UNet passes/frame", lambda r: f"{r['unet_passes_per_frame']:.2f}" if "unet_passes_per_frame" in r else ""),
                 ("UNet images/frame", lambda r: f"{r['unet_images_per_frame']:.2f}" if "unet_images_per_frame" in r else ""),
                 ("speed-up of batching", lambda r: f"{r['speedup_batched']:.2f}x" if "speedup_batched" in r else "")],
    "gradient_snr": [("cosine with the pathwise gradient (mean ± std)",
                      lambda r: f"{r['cosine_mean']:+.3f} ± {r['cosine_std']:.3f}")],
}


def runs_table(rec: dict) -> list[str]:
    """One run: a row per stage; several: a row per run, a column per stage (in first-seen order)."""
    runs = rec["runs"]
    extra = [(h, fn) for h, fn in EXTRA.get(rec["benchmark"], []) if any(fn(r) for r in runs)]  # e.g. --arch paper
    if len(runs) == 1 and not extra:
        r = runs[0]
        lines = [f"| stage | seconds ({r['items']} {r['item']}s) | s/{r['item']} |", "|---|---|---|"]
        lines += [f"| {k} | {num(v * r['items'])} | {num(v)} |" for k, v in r["s_per_item"].items()]
        lines.append(f"| all | {num(r['seconds'])} | {num(r['seconds'] / r['items'])} |")
        return lines + ["", f"{r['label']}: {r['items_per_s']:.2f} {r['item']}s/s, peak RSS {r['peak_rss_mb']:.0f} MB."]
    stages = list(dict.fromkeys(k for r in runs for k in r["s_per_item"]))
    item = runs[0]["item"]
    lines = ["| run | " + " | ".join(f"{s} (s/{item})" for s in stages) + f" | {item}s/s | peak RSS (MB) | "
             + "".join(f"{h} | " for h, _ in extra).rstrip(),
             "|" + "---|" * (len(stages) + 3 + len(extra))]
    for r in runs:
        cells = " | ".join(num(r["s_per_item"][s]) if s in r["s_per_item"] else "" for s in stages)
        lines.append(f"| {r['label']} | {cells} | {r['items_per_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     + "".join(f"{fn(r)} | " for _, fn in extra).rstrip())
    return lines


def notes(rec: dict) -> list[str]:
    """What a benchmark measures beside time: its results, below its table."""
    name, st = rec["benchmark"], rec["settings"]
    if name == "stylize":
        return [f"Clip `{Path(st['clip']).name}` played forward and back to each length, style "
                f"`{Path(st['style']).name}`, chunks of {st['chunk']} frames."]
    if name == "evalmetrics":
        return [f"Warping error of P {rec['warping_error_p']:.4f}, of Bonneel's output {rec['warping_error_bonneel']:.4f}; "
                f"MS-SSIM of Bonneel's output to P {rec['ms_ssim_bonneel_to_p']:.3f}; conjugate gradients on frame 1: "
                f"{rec['cg_iterations_frame1']} iterations, relative residual {rec['cg_residual_frame1']:.1e}."]
    if name == "backbone" and "unet_gflop" in rec:
        out = [f"SD-1.5 UNet (random weights) {rec['unet_params_m']:.0f} M parameters: {rec['unet_gflop']:.1f} GFLOP "
               f"per pass at latent {st['latent']}; VAE decode {rec['vae_decode_gflop']:.1f} GFLOP."]
        if "unet_tflop_per_s" in rec:
            out.append(f"On {rec['device']}: the UNet alone reached {rec['unet_tflop_per_s']:.1f} TFLOP/s, "
                       f"the whole batched clip {rec['clip_unet_tflop_per_s']:.1f} UNet TFLOP/s.")
        return out
    if name == "backbone":
        return [f"{rec['steps']} denoising steps, batch size {rec['batch_size']}, on {rec['device']}."]
    if name == "paper_estimate":
        out = ["| network @ resolution | GFLOP per image |", "|---|---|"]
        out += [f"| {k} | {v:.1f} |" for k, v in rec["gflop_per_image"].items()]
        for e in rec["estimates"]:
            total = e["total_s"]
            out += ["", f"DiffuseST at {e['resolution']} px ({e['label']}), at {rec['tflop_per_s_assumed']:.0f} TFLOP/s "
                    f"({st['mfu']:.0%} of {st['peak'] / 1e12:.0f}):", "",
                    "| item | TFLOP | GPU seconds | share |", "|---|---|---|---|"]
            out += [f"| {k} | {v['tflop']:.1f} | {v['s']:.1f} | {v['s'] / total:.1%} |" for k, v in e["items"].items()]
            out += [f"| total compute | {e['total_tflop']:.1f} | {total:.1f} ({total / 3600:.2f} h) | |",
                    f"| model loads (not FLOPs, assumed) | | {e['loads_s']:.0f} ({e['model_loads']} loads) | |"]
        for k, m in rec.get("measured", {}).items():
            out.append(f"\nMeasured {k}, batch {m['batch']}: {m['tflop_per_s']:.3g} TFLOP/s, "
                       f"{m['fraction_of_peak']:.1%} of the peak.")
        return out
    if name == "gradient_snr":
        return [f"{rec['clips']} train clips x {st['seeds']} seeds, windows of {rec['window']} latent "
                f"cells, {st['exact']} pathwise draws in the reference; building the stylizer, reward "
                f"and episodes took {rec['setup_s']:.0f} s."]
    return []


def table(rec: dict) -> str:
    m = rec["machine"]
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    head = (f"`{rec['command']}` (profile `{rec['profile']}`), {rec['date']}: {m['cpu']} ({m['arch']}, {m['cpus']} "
            f"CPUs{gpu}, load average {m['load_avg_1min']:.1f}), {m['threads']} torch threads, torch {rec['torch']}; "
            f"process peak RSS {rec['peak_rss_mb']:.0f} MB.")
    body = runs_table(rec)
    extra = notes(rec)
    return "\n".join([head, "", *body, *([""] + extra if extra else [])]) + "\n"


def records(name: str, profiles) -> list[dict]:
    found = sorted(paths.home().glob(f"results/*/bench/{name}.json"))
    recs = [json.loads(p.read_text()) for p in found]
    return [r for r in recs if profiles is None or r["profile"] in profiles]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", nargs="+", default=None, help="only the records of these profiles (default: all)")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    for name in sorted(p.stem for p in BENCH.glob("*.py")):
        pattern = block(name)
        if not pattern.search(text):
            print(f"{DOC}: the markers <!-- bench:{name} --> ... <!-- /bench --> are missing", file=sys.stderr)
            return 1
        recs = records(name, args.profile)
        body = "\n".join(table(r) for r in recs) if recs else (
            f"No record yet: run `python benchmarks/{name}.py` (it writes "
            f"`{bench.record_path('<profile>', name).relative_to(paths.home())}`), then "
            f"`python scripts/performance_table.py`.\n")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
        print(f"{name}: {len(recs)} record(s)")
    atomic_write_text(DOC, text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
