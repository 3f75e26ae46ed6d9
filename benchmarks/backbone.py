"""Benchmark the DiffuseST baseline: batched vs one frame at a time, and SD1.5 UNet FLOPs.

    python benchmarks/backbone.py --profile smoke --frames 8          # tiny twin, CPU
    python benchmarks/backbone.py --arch paper --latent 32             # SD1.5 UNet FLOPs (+ TFLOP/s on a GPU)

Smoke numbers measure the machinery on a tiny random model, not the paper's backbone. Prints, per
mode, seconds per frame of each stage (inversion, denoising, decoding), frames/s and peak resident
memory, and writes ``results/<profile>/bench/backbone.json`` (``vstlib.bench``; ``--arch paper`` files
it under the paper profile, whose architecture it is).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vstlib import bench
from vstlib.backbones.diffusest import DiffuseST
from vstlib.backbones.diffusest.tiny import SD15_UNET, SD15_VAE, tiny_components
from vstlib.config import get_config
from vstlib.runtime import resolve_device


def synthetic(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=size, mode="bicubic").clamp(0, 1)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_clip(sty: DiffuseST, frames, ctx, per_frame: bool) -> tuple[dict, int, int]:
    """Seconds per stage, UNet passes and UNet images for invert -> denoise -> decode of the clip."""
    c0, i0 = sty.unet_calls, sty.unet_images
    t = bench.Timers()
    for part in ([frames[i:i + 1] for i in range(len(frames))] if per_frame else [frames]):
        with t.stage("invert"):                      # synced inside each stage: GPU work is asynchronous
            inv = sty.invert(part)
            sync(sty.device)
        with t.stage("denoise"):
            latents = sty.denoise(inv.xT, inv, ctx)
            sync(sty.device)
        with t.stage("decode"):
            sty.decode(latents)
            sync(sty.device)
    return dict(t.s), sty.unet_calls - c0, sty.unet_images - i0


def bench_stylizer(sty: DiffuseST, n_frames: int, label: str) -> list[dict]:
    """The batched and the one-at-a-time ``bench.run``s of an ``n_frames`` synthetic clip."""
    res = sty.cfg.resolution
    frames, style = synthetic(n_frames, res, 0), synthetic(1, res, 1)
    ctx = sty.style_context(style)            # shared by both modes (computed once per clip anyway)
    run_clip(sty, frames[:2], ctx, per_frame=False)                          # warm-up (kernels, allocator)
    n, runs = n_frames, []
    for mode, per_frame in (("batched", False), ("one at a time", True)):
        stages, calls, images = run_clip(sty, frames, ctx, per_frame)
        runs.append(bench.run(f"{label}: {mode}", "frame", n, stages, size=[res, res],
                              unet_passes_per_frame=calls / n, unet_images_per_frame=images / n))
    runs[1]["speedup_batched"] = runs[1]["seconds"] / runs[0]["seconds"]
    tb, ts = runs[0]["seconds"], runs[1]["seconds"]
    print(f"[{label}] {n} frames at {res}x{res}, {sty.cfg.num_inference_steps} steps, batch_size {sty.cfg.batch_size}, "
          f"device {sty.device}, dtype {sty.dtype}, threads {torch.get_num_threads()}")
    for r, mode in zip(runs, ("batched:", "one at a time:")):
        stages = "  ".join(f"{k} {v:.4f}" for k, v in r["s_per_item"].items())
        print(f"  {mode:<17} {r['items_per_s']:8.2f} frames/s  ({r['seconds']:.2f} s)  UNet passes/frame "
              f"{r['unet_passes_per_frame']:6.2f}  UNet images/frame {r['unet_images_per_frame']:6.2f}  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB  s/frame: {stages}")
    print(f"  speed-up batched / one-at-a-time: {ts / tb:.2f}x")
    content, style_steps = len(sty.content_steps), len(sty.style_steps)
    print(f"  denoising images per clip: content steps {content} x 3T, style steps {style_steps} x (2T+1) "
          f"(style reference shared across frames; 3T would be {3 * n} per style step)")
    return runs


def unet_flops(unet, latent: int, batch: int = 1) -> int:
    x = torch.randn(batch, 4, latent, latent, device=unet.device, dtype=unet.dtype)
    ctx = torch.randn(batch, 77, unet.config.cross_attention_dim, device=unet.device, dtype=unet.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(x, 500, encoder_hidden_states=ctx)
    return fc.get_total_flops()


def vae_decode_flops(vae, latent: int) -> int:
    z = torch.randn(1, 4, latent, latent, device=vae.device, dtype=vae.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        vae.decode(z)
    return fc.get_total_flops()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke", choices=["smoke", "paper"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--arch", default="tiny", choices=["tiny", "paper"],
                    help="paper: full-size SD1.5 UNet/VAE from configs, random weights (no download)")
    ap.add_argument("--latent", type=int, default=32, help="latent size for --arch paper (32 = 256 px)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("NOTE: smoke/tiny figures check the machinery on random tiny models, not the paper's backbone.")

    if args.arch == "tiny":
        cfg = get_config(args.profile)
        # no cache_dir: measure the work itself
        sty = DiffuseST.from_config(cfg.backbone, device=resolve_device(cfg.train.device))
        runs = bench_stylizer(sty, args.frames, f"{args.profile}/{cfg.backbone.model_id}")
        rec = bench.record("backbone", args.profile, args, argv, runs, device=str(sty.device),
                           steps=sty.cfg.num_inference_steps, batch_size=sty.cfg.batch_size)
        bench.write_record(rec)
        return rec

    # ---- paper architecture: SD1.5 UNet + VAE with random weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**SD15_UNET, "sample_size": args.latent})
    vae = AutoencoderKL(**SD15_VAE)
    n_params = sum(p.numel() for p in unet.parameters())
    t = bench.Timers()
    with t.stage("count UNet FLOPs"):
        f_unet = unet_flops(unet, args.latent)
    with t.stage("count VAE decode FLOPs"):
        f_vae = vae_decode_flops(vae, args.latent)
    print(f"[paper arch] SD1.5 UNet {n_params / 1e6:.0f} M params; one UNet pass per image at "
          f"{args.latent}x{args.latent} latent ({8 * args.latent} px): {f_unet / 1e9:.1f} GFLOP "
          f"(counted in {t.s['count UNet FLOPs']:.1f} s on {unet.device}); VAE decode: {f_vae / 1e9:.1f} GFLOP")
    # one "item" is one counted forward pass (of the UNet or the VAE decoder)
    runs = [bench.run("FLOP counting (random SD1.5 UNet, VAE)", "model", 2, dict(t.s))]
    flops = {"unet_params_m": n_params / 1e6, "unet_gflop": f_unet / 1e9, "vae_decode_gflop": f_vae / 1e9}
    if not torch.cuda.is_available():
        print("  no GPU: achieved TFLOP/s not measured")
        rec = bench.record("backbone", "paper", args, argv, runs, **flops)
        bench.write_record(rec)
        return rec
    dev = torch.device("cuda")
    cfg = get_config("paper", backbone={"resolution": 8 * args.latent, "batch_size": max(8, args.frames)})
    dtype = torch.float16 if cfg.backbone.dtype == "float16" else torch.bfloat16
    comps = tiny_components(0, unet=unet, vae=vae, text_dim=SD15_UNET["cross_attention_dim"])
    sty = DiffuseST(cfg.backbone, comps, device=dev)
    # raw UNet throughput on the denoising batch [ref, uncond, cond] of T frames
    x = torch.randn(3 * args.frames, 4, args.latent, args.latent, device=dev, dtype=dtype)
    ctx = torch.randn(3 * args.frames, 77, 768, device=dev, dtype=dtype)
    with torch.no_grad():
        for _ in range(3):
            sty.unet(x, 500, encoder_hidden_states=ctx)
        sync(dev)
        t0, iters = time.perf_counter(), 10
        for _ in range(iters):
            sty.unet(x, 500, encoder_hidden_states=ctx)
        sync(dev)
    dt = time.perf_counter() - t0
    flops["unet_tflop_per_s"] = iters * len(x) * f_unet / dt / 1e12
    print(f"  UNet alone, batch {len(x)} {dtype}: {flops['unet_tflop_per_s']:.1f} TFLOP/s "
          f"({iters * len(x) / dt:.1f} images/s)")
    runs.append(bench.run(f"UNet alone, batch {len(x)} {dtype}", "image", iters * len(x), {"UNet": dt}))
    runs += bench_stylizer(sty, args.frames, "paper-arch (random SD1.5 UNet/VAE, tiny text/Q-Former)")
    batched = runs[2]
    flops["clip_unet_tflop_per_s"] = (batched["unet_images_per_frame"] * args.frames * f_unet
                                      / batched["seconds"] / 1e12)
    print(f"  whole batched clip: {flops['clip_unet_tflop_per_s']:.1f} UNet TFLOP/s achieved")
    rec = bench.record("backbone", "paper", args, argv, runs, device=str(dev), **flops)
    bench.write_record(rec)
    return rec


if __name__ == "__main__":
    main()
