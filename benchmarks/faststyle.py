"""CPU frames/s of the fast-style backbone: per-frame stylization alone vs the whole consistent pipeline.

    python benchmarks/faststyle.py [--frames 8] [--style wave] [--batch-size 4] [--threads 2]

Uses the integrated API of the cpu profile (vstlib.config.get_config("cpu")):
per-frame:  N(I_t)                                         (the flickering per-frame stylization)
pipeline:   flow (cfg.flow.source = "dis": fw and bw on the input) + N(I_t) + L_t = E(N(I_t))
            + policy(L_{t-1}, L_t) (LatentPolicy.from_config(cfg.policy)) + D(L_t + delta)
            (the backbone's stylize without its disk cache, then render)
Reads a vendored clip (vstlib/assets/clips), so it runs offline. Numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from vstlib import paths
from vstlib.backbones import make_backbone
from vstlib.config import get_config
from vstlib.flow import get_estimator
from vstlib.nets.faststyle import STYLES
from vstlib.rl.policy import LatentPolicy
from vstlib.video.io import read_frames, to_tensor


@torch.inference_mode()
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--style", choices=STYLES, default="wave")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clip", default=str(paths.ASSETS / "clips" / "wolf.mp4"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_config("cpu")
    x = to_tensor(read_frames(args.clip, args.frames))          # (T,3,H,W)
    bb = make_backbone(dataclasses.replace(cfg.backbone, style_net=args.style, batch_size=args.batch_size),
                       "cpu", None)                                        # no disk cache: time the work
    torch.manual_seed(0)
    policy = LatentPolicy.from_config(cfg.policy).eval()                   # random: only its cost matters
    flows = get_estimator(cfg.flow.source)
    n = len(x)
    warm = bb.stylize(x[:2])                                               # warm-up (and the output size)

    def batched(fn, v):
        return torch.cat([fn(v[i:i + bb.batch_size]) for i in range(0, len(v), bb.batch_size)])

    t = {}
    t0 = time.perf_counter()
    s = batched(bb.net, x).clamp(0, 1)                                     # (T,3,H,W) N(I_t)
    t["stylize N"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    flows(x, cfg.flow)                                                     # fw, bw (T-1,2,H,W) + masks
    t["flow fw+bw"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = dataclasses.replace(warm, latents=batched(bb.ae.encode, s))      # L_t = E(N(I_t))
    t["encode E"] = time.perf_counter() - t0
    L = bb.policy_latents(out)                                             # (T,32,H/8,W/8)
    t0 = time.perf_counter()
    delta = policy(L[:-1], L[1:]).mean
    t["policy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched(lambda v: bb.render(v, out, None), L[1:] + delta)              # D(L_t + delta)
    t["render D"] = time.perf_counter() - t0

    per_frame = n / t["stylize N"]
    pipeline = n / sum(t.values())
    print(f"{n} frames {tuple(x.shape[-2:])} of {args.clip}, style {args.style}, batch {bb.batch_size}, "
          f"{torch.get_num_threads()} threads")
    for k, v in t.items():
        print(f"  {k:<18} {v:7.2f} s  ({v / n:.3f} s/frame)")
    print(f"per-frame stylization: {per_frame:.3f} frames/s")
    print(f"consistent pipeline:   {pipeline:.3f} frames/s")
    print(f"ratio pipeline/per-frame: {pipeline / per_frame:.2f} (the pipeline costs {per_frame / pipeline:.2f}x)")


if __name__ == "__main__":
    main()
