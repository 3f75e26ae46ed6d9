"""CPU frames/s of the fast-style backbone: per-frame stylization alone vs the whole consistent pipeline.

    python benchmarks/faststyle.py [--frames 8] [--style wave] [--batch-size 4] [--threads 2]

per-frame:  N(I_t)                                                  (the flickering baseline)
pipeline:   N(I_t) + DIS flow fw and bw on the input + L_t = E(N(I_t))
            + policy(L_{t-1}, L_t) (vstlib.policy.LatentPolicy at 32 channels) + D(L_t + delta)
Reads a vendored clip (vstlib/assets/clips), so it runs offline. Numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import time

import torch

from vstlib import data, paths
from vstlib.flow_dis import dis_flow
from vstlib.nets.faststyle import STYLES, load_faststyle
from vstlib.nets.taef2 import LATENT_CHANNELS, load_taef2
from vstlib.policy import LatentPolicy


def batched(fn, x, bs):
    return torch.cat([fn(x[i:i + bs]) for i in range(0, len(x), bs)])


@torch.no_grad()
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--style", choices=STYLES, default="wave")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clip", default=str(paths.ASSETS / "clips" / "wolf.mp4"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = data.to_tensor(data.read_frames(args.clip, args.frames))          # (T,3,H,W)
    net, ae = load_faststyle(args.style), load_taef2()
    torch.manual_seed(0)
    policy = LatentPolicy(latent_channels=LATENT_CHANNELS).eval()          # random: only its cost matters
    bs, n = args.batch_size, len(x)
    net(x[:1]), ae(x[:1])                                                  # warm-up

    t = {}
    t0 = time.perf_counter()
    s = batched(net, x, bs)                                                # (T,3,H,W) N(I_t)
    t["stylize N"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fw, bw = dis_flow(x[:-1], x[1:]), dis_flow(x[1:], x[:-1])              # (T-1,2,H,W) each
    t["DIS flow fw+bw"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    z = batched(ae.encode, s, bs)                                          # (T,32,H/8,W/8)
    t["encode E"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    delta = torch.cat([torch.zeros_like(z[:1]), policy(z[:-1], z[1:]).mean])
    t["policy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched(lambda v: ae.decode(v, x.shape[-2:]), z + delta, bs)
    t["decode D"] = time.perf_counter() - t0

    per_frame = n / t["stylize N"]
    pipeline = n / sum(t.values())
    print(f"{n} frames {tuple(x.shape[-2:])} of {args.clip}, style {args.style}, batch {bs}, "
          f"{torch.get_num_threads()} threads")
    for k, v in t.items():
        print(f"  {k:<16} {v:7.2f} s  ({v / n:.3f} s/frame)")
    print(f"per-frame stylization: {per_frame:.3f} frames/s")
    print(f"consistent pipeline:   {pipeline:.3f} frames/s")
    print(f"ratio pipeline/per-frame: {pipeline / per_frame:.2f} (the pipeline costs {per_frame / pipeline:.2f}x)")


if __name__ == "__main__":
    main()
