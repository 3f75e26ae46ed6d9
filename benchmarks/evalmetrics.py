"""CPU time of the evaluation's pieces on a synthetic clip: the judge's flow, each metric, Bonneel et al.

    python benchmarks/evalmetrics.py [--frames 12] [--size 256] [--threads 2] [--profile cpu]

The clip is a smooth random texture moving 2 px right and 1 px down per frame; P, the per-frame
"stylization", is the clip with a random brightness flicker and noise per frame (what Bonneel removes).
Prints each piece's seconds (and per frame), frames/s and peak resident memory, and writes
``results/<profile>/bench/evalmetrics.json`` (``vstlib.bench``; the profile only files the record:
the synthetic clip uses none of its settings). Numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from vstlib import bench
from vstlib.evaluation import bonneel, metrics
from vstlib.flow import warp, with_masks
from vstlib.nets.perceptual import DarknetPerceptual


def clip(T: int, size: int, seed: int = 0):
    """(frames, P) (T,3,size,size) in [0,1]: a moving texture and a flickering copy of it."""
    g = torch.Generator().manual_seed(seed)
    m = 2 * T + 2
    full = F.interpolate(torch.rand(1, 3, (size + 2 * m) // 8, (size + 2 * m) // 8, generator=g),
                         size=(size + 2 * m,) * 2, mode="bicubic", align_corners=False).clamp(0, 1)
    frames = torch.cat([full[..., m - t:m - t + size, m - 2 * t:m - 2 * t + size] for t in range(T)])
    flicker = 0.15 * (torch.rand(T, 3, 1, 1, generator=g) - 0.5) + 0.03 * torch.randn(frames.shape, generator=g)
    return frames, (frames + flicker).clamp(0, 1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", default="cpu", help="results/<profile>/bench gets the record")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames, P = clip(args.frames, args.size)
    print(f"{args.frames} frames of {args.size}x{args.size}, {args.threads} threads")

    t = bench.Timers()

    def timed(name: str, fn, *a):
        out = t.wrap(name, fn)(*a)
        print(f"{name:32s} {t.s[name]:7.3f} s  {t.s[name] / args.frames:7.4f} s/frame")
        return out

    flows = timed("judge_flows (Farneback fw + bw)", metrics.judge_flows, frames)
    timed("clip_warping_error", metrics.clip_warping_error, P, flows)
    timed("long_term_warping_error k=5", metrics.long_term_warping_error, P, frames, 5)
    metrics.fidelity_ssim(P[:1], frames[:1])                                # torchmetrics' import, once
    timed("fidelity_ssim (MS-SSIM)", metrics.fidelity_ssim, P, frames)
    timed("sharpness", metrics.sharpness, P)
    timed("relative_sharpness", metrics.relative_sharpness, P, frames)
    net = DarknetPerceptual()
    timed("perceptual_fidelity (Darknet)", metrics.perceptual_fidelity, P, frames, net)

    masked = with_masks(flows["fw"], flows["bw"], "ruder")
    O = timed("bonneel (lam 0.1, tol 1e-4)", bonneel.bonneel, P, frames, masked)
    r = bench.run(f"{args.frames} frames ({args.size}x{args.size})", "frame", args.frames, dict(t.s))
    print(f"all pieces: {r['items_per_s']:.2f} frames/s, peak RSS {r['peak_rss_mb']:.0f} MB")
    w_p = metrics.clip_warping_error(P, flows).mean().item()
    w_o = metrics.clip_warping_error(O.clamp(0, 1), flows).mean().item()
    ssim = metrics.fidelity_ssim(O.clamp(0, 1), P).mean().item()
    print(f"warping error: per-frame P {w_p:.4f}, Bonneel {w_o:.4f}; MS-SSIM of Bonneel to P {ssim:.3f}")
    bw, w = masked["bw"][:1], masked["mask_bw"][:1]                          # frame 1 as bonneel solves it
    w = w * bonneel.input_weight(frames[1:2], frames[:1], bw, bonneel.ALPHA)
    _, it, res = bonneel.solve_frame(P[1:2], warp(P[:1], bw), w, bonneel.LAM)
    print(f"CG on frame 1: {it} iterations, relative residual {res.max().item():.1e}")
    # the sanity figures: a Bonneel that does not lower the warping error would make its time moot
    rec = bench.record("evalmetrics", args.profile, args, argv, [r], warping_error_p=w_p,
                       warping_error_bonneel=w_o, ms_ssim_bonneel_to_p=ssim, cg_iterations_frame1=int(it),
                       cg_residual_frame1=res.max().item())
    bench.write_record(rec)
    return rec


if __name__ == "__main__":
    main()
