"""Benchmark the DiffuseST baseline: batched vs one frame at a time, and SD1.5 UNet FLOPs.

    python benchmarks/backbone.py --profile smoke --frames 8          # tiny twin, CPU
    python benchmarks/backbone.py --arch paper --latent 32             # SD1.5 UNet FLOPs (+ TFLOP/s on a GPU)

Smoke numbers measure the machinery on a tiny random model, not the paper's backbone.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

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


def run_clip(sty: DiffuseST, frames, ctx, per_frame: bool) -> tuple[float, int, int]:
    """Seconds, UNet passes and UNet images for invert -> denoise -> decode of the clip."""
    c0, i0 = sty.unet_calls, sty.unet_images
    sync(sty.device)
    t0 = time.perf_counter()
    for part in ([frames[i:i + 1] for i in range(len(frames))] if per_frame else [frames]):
        inv = sty.invert(part)
        sty.decode(sty.denoise(inv.xT, inv, ctx))
    sync(sty.device)
    return time.perf_counter() - t0, sty.unet_calls - c0, sty.unet_images - i0


def bench_stylizer(sty: DiffuseST, n_frames: int, label: str) -> None:
    res = sty.cfg.resolution
    frames, style = synthetic(n_frames, res, 0), synthetic(1, res, 1)
    ctx = sty.style_context(style)            # shared by both modes (computed once per clip anyway)
    run_clip(sty, frames[:2], ctx, per_frame=False)                          # warm-up (kernels, allocator)
    tb, cb, ib = run_clip(sty, frames, ctx, per_frame=False)
    ts, cs, is_ = run_clip(sty, frames, ctx, per_frame=True)
    n = n_frames
    print(f"[{label}] {n} frames at {res}x{res}, {sty.cfg.num_inference_steps} steps, batch_size {sty.cfg.batch_size}, "
          f"device {sty.device}, dtype {sty.dtype}, threads {torch.get_num_threads()}")
    print(f"  batched:          {n / tb:8.2f} frames/s  ({tb:.2f} s)  UNet passes/frame {cb / n:6.2f}  "
          f"UNet images/frame {ib / n:6.2f}")
    print(f"  one at a time:    {n / ts:8.2f} frames/s  ({ts:.2f} s)  UNet passes/frame {cs / n:6.2f}  "
          f"UNet images/frame {is_ / n:6.2f}")
    print(f"  speed-up batched / one-at-a-time: {ts / tb:.2f}x")
    content, style_steps = len(sty.content_steps), len(sty.style_steps)
    print(f"  denoising images per clip: content steps {content} x 3T, style steps {style_steps} x (2T+1) "
          f"(style reference shared across frames; 3T would be {3 * n} per style step)")
    return tb, ib


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


def main(argv=None) -> None:
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
        bench_stylizer(sty, args.frames, f"{args.profile}/{cfg.backbone.model_id}")
        return

    # ---- paper architecture: SD1.5 UNet + VAE with random weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**SD15_UNET, "sample_size": args.latent})
    vae = AutoencoderKL(**SD15_VAE)
    n_params = sum(p.numel() for p in unet.parameters())
    t0 = time.perf_counter()
    f_unet = unet_flops(unet, args.latent)
    t_count = time.perf_counter() - t0
    f_vae = vae_decode_flops(vae, args.latent)
    print(f"[paper arch] SD1.5 UNet {n_params / 1e6:.0f} M params; one UNet pass per image at "
          f"{args.latent}x{args.latent} latent ({8 * args.latent} px): {f_unet / 1e9:.1f} GFLOP "
          f"(counted in {t_count:.1f} s on {unet.device}); VAE decode: {f_vae / 1e9:.1f} GFLOP")
    if not torch.cuda.is_available():
        print("  no GPU: achieved TFLOP/s not measured")
        return
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
    print(f"  UNet alone, batch {len(x)} {dtype}: {iters * len(x) * f_unet / dt / 1e12:.1f} TFLOP/s "
          f"({iters * len(x) / dt:.1f} images/s)")
    tb, images = bench_stylizer(sty, args.frames, "paper-arch (random SD1.5 UNet/VAE, tiny text/Q-Former)")
    print(f"  whole batched clip: {images * f_unet / tb / 1e12:.1f} UNet TFLOP/s achieved")


if __name__ == "__main__":
    main()
