"""Cost of the consistency layer: `vst stylize`'s own path with and without a policy, per stage.

    python benchmarks/stylize.py [--profile cpu] [--frames 16] [--threads 2] [--chunk 16] [--clip PATH] [--style PATH]
    python benchmarks/stylize.py --frames 100 1000            # long videos: frames/s and peak memory
    python benchmarks/stylize.py --frames 16 100 1000 --repeats 3   # each path at its best of 3 (a noisy machine)

Runs ``vstlib.stylize.stylized_chunks`` (the code `vst stylize` runs) on a vendored clip, looped to
the requested length, twice: without a policy (the per-frame stylization N(I_t)) and with the
profile's policy (untrained: only its cost matters). Stages are timed by wrapping the functions the
path calls: the stylizer, the input's flow, the policy's unroll and the render. Prints seconds per
frame per stage, frames/s, the consistent/per-frame cost ratio and the peak resident memory of each
length, and writes ``results/<profile>/bench/stylize.json`` (``vstlib.bench``; read by ``scripts/performance_table.py``).
Numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import torch

from vstlib import bench, paths, stylize
from vstlib.backbones import make_backbone
from vstlib.config import get_config
from vstlib.rl.policy import LatentPolicy
from vstlib.video.io import load_image


def looped_chunks(frames: torch.Tensor, chunk: int, n: int):
    """``frames`` (T,3,H,W) played forward then backward (no jump) until ``n`` frames, in chunks."""
    order = itertools.cycle(list(range(len(frames))) + list(range(len(frames) - 2, 0, -1)))
    idx = [next(order) for _ in range(n)]
    for i in range(0, n, chunk):
        yield frames[idx[i:i + chunk]]


def run(cfg, clip, style: str, n: int, chunk: int, policy) -> dict:
    """Stylize ``n`` frames through ``stylized_chunks``: a ``bench.run`` of the stages."""
    cfg_bb, style_path = stylize.resolve_style(cfg, style)
    style = load_image(style_path, cfg_bb.resolution or cfg.data.size, cfg.data.resize)
    short = cfg_bb.resolution or cfg.data.size
    frames = next(stylize.frame_chunks(clip, short, chunk=64))               # (<=64,3,H,W), read once, untimed
    first = frames[:2]
    bb = make_backbone(dataclasses.replace(cfg_bb, resolution=min(first.shape[-2:])), "cpu", None)  # no disk cache
    t = bench.Timers()
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
    size = list(first.shape[-2:])
    label = f"{n} frames ({size[0]}x{size[1]}), " + ("with the policy" if policy else "per-frame N(I_t)")
    return bench.run(label, "frame", done, stages, length=n, size=size,
                     path="consistent" if policy else "per_frame")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--frames", type=int, nargs="+", default=[16], help="video lengths to time (looped clip)")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the two paths this many times, keep each one's best")
    ap.add_argument("--clip", default=str(paths.ASSETS / "clips" / "wolf.mp4"))
    ap.add_argument("--style", default=str(paths.ASSETS / "styles" / "starry_night.jpg"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_config(args.profile)
    torch.manual_seed(0)
    policy = LatentPolicy.from_config(cfg.policy).eval()
    runs = []
    print(f"profile {args.profile}, clip {args.clip}, chunk {args.chunk}, {torch.get_num_threads()} threads")
    for n in args.frames:
        # the two paths alternate, each kept at its best of --repeats (a shared machine only slows runs down)
        pairs = [(run(cfg, args.clip, args.style, n, args.chunk, None),
                  run(cfg, args.clip, args.style, n, args.chunk, policy)) for _ in range(args.repeats)]
        base, cons = (max((p[i] for p in pairs), key=lambda r: r["items_per_s"]) for i in (0, 1))
        cons["ratio"] = base["items_per_s"] / cons["items_per_s"]     # the consistency layer's cost
        cons["ratios"] = [b["items_per_s"] / c["items_per_s"] for b, c in pairs]   # each pair's, for the spread
        runs += [base, cons]
        print(f"{n} frames at {base['size'][0]}x{base['size'][1]}")
        for name, r in (("per-frame N(I_t)", base), ("consistent (policy)", cons)):
            stages = "  ".join(f"{k} {v:.4f}" for k, v in r["s_per_item"].items())
            print(f"  {name:<20} {r['items_per_s']:7.2f} frames/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"s/frame: {stages}")
        spread = f" (each pair: {', '.join(f'{r:.2f}' for r in cons['ratios'])})" if len(pairs) > 1 else ""
        print(f"  consistent / per-frame cost: {cons['ratio']:.2f}x{spread}")
    rec = bench.record("stylize", args.profile, args, argv, runs)
    bench.write_record(rec)
    return rec


if __name__ == "__main__":
    main()
