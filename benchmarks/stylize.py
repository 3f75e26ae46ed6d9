"""Cost of the consistency layer: `vst stylize`'s own path with and without a policy, per stage.

    python benchmarks/stylize.py [--profile cpu] [--frames 16] [--threads 2] [--chunk 16] [--clip PATH] [--style PATH]
    python benchmarks/stylize.py --frames 100 1000            # long videos: frames/s and peak memory

Runs ``vstlib.stylize.stylized_chunks`` (the code `vst stylize` runs) on a vendored clip, looped to
the requested length, twice: without a policy (the per-frame stylization N(I_t)) and with the
profile's policy (untrained: only its cost matters). Stages are timed by wrapping the functions the
path calls: the stylizer, the input's flow, the policy's unroll and the render. Prints seconds per
frame per stage, frames/s, the consistent/per-frame cost ratio and the peak resident memory of each
length, and writes ``results/<profile>/bench/stylize.json`` (read by ``benchmarks/report.py``).
Numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import resource
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone

import torch

from vstlib import paths, stylize
from vstlib.backbones import make_backbone
from vstlib.config import get_config
from vstlib.files import atomic_write_json
from vstlib.rl.policy import LatentPolicy
from vstlib.video.io import load_image


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


class Timers:
    """Wraps callables so that their wall time adds up under a stage name."""

    def __init__(self):
        self.s = defaultdict(float)

    def wrap(self, name, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            self.s[name] += time.perf_counter() - t0
            return out
        return timed


def looped_chunks(frames: torch.Tensor, chunk: int, n: int):
    """``frames`` (T,3,H,W) played forward then backward (no jump) until ``n`` frames, in chunks."""
    order = itertools.cycle(list(range(len(frames))) + list(range(len(frames) - 2, 0, -1)))
    idx = [next(order) for _ in range(n)]
    for i in range(0, n, chunk):
        yield frames[idx[i:i + chunk]]


def run(cfg, clip, style: str, n: int, chunk: int, policy) -> dict:
    """Stylize ``n`` frames through ``stylized_chunks``; seconds per stage and in all."""
    cfg_bb, style_path = stylize.resolve_style(cfg, style)
    style = load_image(style_path, cfg_bb.resolution or cfg.data.size, cfg.data.resize)
    short = cfg_bb.resolution or cfg.data.size
    frames = next(stylize.frame_chunks(clip, short, chunk=64))               # (<=64,3,H,W), read once, untimed
    first = frames[:2]
    bb = make_backbone(dataclasses.replace(cfg_bb, resolution=min(first.shape[-2:])), "cpu", None)  # no disk cache
    t = Timers()
    bb.stylize = t.wrap("stylize N", bb.stylize)
    flows = t.wrap("flow fw+bw", stylize._flows_fn(cfg.flow))
    saved = stylize.unroll, stylize.render
    stylize.unroll, stylize.render = t.wrap("policy step", stylize.unroll), t.wrap("render", stylize.render)
    try:
        for _ in stylize.stylized_chunks(bb, looped_chunks(frames, chunk, 2), style, policy, None, flows):
            pass                                                          # warm-up (kernels, allocator)
        t.s.clear()
        t0 = time.perf_counter()
        done = 0
        for images in stylize.stylized_chunks(bb, looped_chunks(frames, chunk, n), style, policy, None, flows):
            done += len(images)
        total = time.perf_counter() - t0
    finally:
        stylize.unroll, stylize.render = saved
    stages = dict(t.s)
    stages["other"] = max(total - sum(stages.values()), 0.0)
    return {"frames": done, "size": list(first.shape[-2:]), "seconds": total,
            "s_per_frame": {k: v / done for k, v in stages.items()}, "frames_per_s": done / total,
            "peak_rss_mb": peak_rss_mb()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--frames", type=int, nargs="+", default=[16], help="video lengths to time (looped clip)")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clip", default=str(paths.ASSETS / "clips" / "wolf.mp4"))
    ap.add_argument("--style", default=str(paths.ASSETS / "styles" / "starry_night.jpg"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_config(args.profile)
    torch.manual_seed(0)
    policy = LatentPolicy.from_config(cfg.policy).eval()
    record = {"profile": args.profile, "clip": str(args.clip), "chunk": args.chunk, "threads": args.threads,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "runs": []}
    print(f"profile {args.profile}, clip {args.clip}, chunk {args.chunk}, {torch.get_num_threads()} threads")
    for n in args.frames:
        base = run(cfg, args.clip, args.style, n, args.chunk, None)
        cons = run(cfg, args.clip, args.style, n, args.chunk, policy)
        ratio = base["frames_per_s"] / cons["frames_per_s"]
        record["runs"].append({"frames": n, "per_frame": base, "consistent": cons, "ratio": ratio})
        print(f"{n} frames at {base['size'][0]}x{base['size'][1]}")
        for name, r in (("per-frame N(I_t)", base), ("consistent (policy)", cons)):
            stages = "  ".join(f"{k} {v:.4f}" for k, v in r["s_per_frame"].items())
            print(f"  {name:<20} {r['frames_per_s']:7.2f} frames/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"s/frame: {stages}")
        print(f"  consistent / per-frame cost: {ratio:.2f}x")
    out = atomic_write_json(paths.ensure(paths.results_dir(args.profile) / "bench") / "stylize.json", record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
