"""Expected GPU wall time of `make reproduce PROFILE=paper`, from FLOP counts and the schedule.

    python benchmarks/paper_estimate.py                    # counts FLOPs on the meta device (~30 s CPU)
    python benchmarks/paper_estimate.py --given            # use issue 14's measured per-image FLOPs
    python benchmarks/paper_estimate.py --mfu 0.4 --peak 989e12 --load-s 20
    python benchmarks/paper_estimate.py --measure           # on a GPU: time the UNet, report the MFU reached

FLOPs per image are counted with torch's FlopCounterMode on the real architectures (SD-1.5
UNet/VAE, VGG19, LPIPS AlexNet, RAFT-large, CLIP ViT-B-32), built on the meta device (no weights,
no memory). The schedule is read from the paper preset (vstlib.config.PAPER) and its ablation
grid (vstlib.config.ablations): clips x frames, inversion + denoising UNet images per frame
(content steps batch 3T, style steps 2T+1, see vstlib/backbones/diffusest/pipeline.py), the style image's inversion,
renders per action (z0: one VAE decode; xT: a whole injected denoising pass + decode), reward
networks per transition, and evaluation. Time = FLOPs / (mfu x peak): one H100 SXM, dense
bf16/fp16 peak 989 TFLOP/s, at 26 % by default (what --measure reached on an H100). Model loading is not FLOPs: it is reported apart,
at an assumed ``--load-s`` seconds per full model-stack load.

This is an estimate of the compute-bound time; Python overheads, data loading and small-batch
inefficiency come on top (the reward networks and the policy run on small batches).

Also prints (and times) the FLOP counting itself, per model, and writes
``results/paper/bench/paper_estimate.json`` (``vstlib.bench``): the counted FLOPs, the estimate per
item and in all, and the counting's own seconds per model and peak resident memory.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vstlib import bench
from vstlib.config import PAPER, ablations

GIVEN = {  # issue 14 (GFLOP per image): UNet per step, VAE decode
    ("unet", 32): 172.0, ("unet", 64): 677.0, ("vae_decode", 256): 620.0, ("vae_decode", 512): 2480.0}


# --------------------------------------------------------------------------- FLOP counting
def _flops(build, inputs, device="meta") -> float:
    """GFLOP of one forward of ``build()`` on ``inputs()`` (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device):
        model = build().eval()
        args = inputs()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*args) if isinstance(args, tuple) else model(**args)
    return fc.get_total_flops() / 1e9


def count_flops(resolutions=(256, 512), loss_res=256, timers: bench.Timers | None = None) -> dict:
    """GFLOP per image of each network, keyed (name, resolution); ``timers`` gets the seconds of each."""
    import open_clip
    import torchvision
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from vstlib.backbones.diffusest.tiny import SD15_UNET, SD15_VAE

    out = {}
    timers = timers or bench.Timers()

    def count(key, build, inputs, device="meta"):
        with timers.stage(f"{key[0]} @ {key[1]}"):
            out[key] = _flops(build, inputs, device)

    for res in resolutions:
        h = res // 8
        count(("unet", h), lambda: UNet2DConditionModel(**SD15_UNET),
              lambda: dict(sample=torch.randn(1, 4, h, h), timestep=torch.tensor([500]),
                           encoder_hidden_states=torch.randn(1, 77, 768)))

        class Dec(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.vae = AutoencoderKL(**SD15_VAE)

            def forward(self, z):
                return self.vae.decode(z).sample

        class Enc(Dec):
            def forward(self, x):
                return self.vae.encode(x).latent_dist.mean

        count(("vae_decode", res), Dec, lambda: (torch.randn(1, 4, h, h),))
        count(("vae_encode", res), Enc, lambda: (torch.randn(1, 3, res, res),))
    r = loss_res
    count(("vgg19", r), lambda: torchvision.models.vgg19().features, lambda: (torch.randn(1, 3, r, r),))
    count(("alexnet", r), lambda: torchvision.models.alexnet().features, lambda: (torch.randn(1, 3, r, r),))
    count(("clip_b32", 224), lambda: open_clip.create_model("ViT-B-32-quickgelu", device="meta").visual,
          lambda: (torch.randn(1, 3, 224, 224),))
    raft = (lambda: torchvision.models.optical_flow.raft_large(),
            lambda: (torch.randn(1, 3, r, r), torch.randn(1, 3, r, r), 12))
    try:  # RAFT's correlation lookup on meta: fall back to a real CPU pass if unsupported
        count(("raft_large", r), *raft)
    except Exception:
        count(("raft_large", r), *raft, "cpu")
    return out


# --------------------------------------------------------------------------- the schedule
def sampling_steps(cfg) -> tuple[int, int]:
    """(content steps, style steps) of the denoising schedule, as the Stylizer builds it."""
    from diffusers import DDIMScheduler

    from vstlib.backbones.diffusest.components import SD_SCHEDULER

    s = DDIMScheduler(**SD_SCHEDULER)
    s.set_timesteps(cfg.backbone.num_inference_steps)
    ts = [int(t) for t in s.timesteps]
    if cfg.backbone.original_schedule:
        return len(ts), 0
    cut = 1000 * cfg.backbone.alpha
    return sum(t >= cut for t in ts), sum(t < cut for t in ts)


def denoise_images(cfg, n: int) -> int:
    """UNet images to denoise n frames: content steps [ref + uncond + cond] = 3n, style 2n+1."""
    c, s = sampling_steps(cfg)
    return c * 3 * n + s * (2 * n + 1)


def estimate(cfg, F: dict, res: int, loss_res: int = 256) -> "OrderedDict[str, float]":
    """GFLOP per item of `make reproduce` for the paper preset ``cfg``."""
    from vstlib.video.prepare import split_clips

    h = res // 8
    T, n = cfg.data.n_frames, cfg.data.n_clips
    train_ids, test_ids = split_clips([f"c{i}" for i in range(n)], cfg.data.train_fraction, cfg.data.split_seed)
    n_inv = cfg.backbone.num_inversion_steps
    unet, dec, enc = F[("unet", h)], F[("vae_decode", res)], F[("vae_encode", res)]
    reward = F[("vgg19", loss_res)] + 2 * F[("alexnet", loss_res)]   # Gram VGG on S; LPIPS on S and I

    def render(c, k):                                                # k actions -> frames
        if c.backbone.injection == "xT":
            return denoise_images(c, k) * unet + k * dec
        return k * dec

    def train_cost(c):                                               # one training run of config c
        per_clip = render(c, T - 1) + (T - 1) * reward * 2           # actions + baseline terms
        return c.train.epochs * len(train_ids) * per_clip

    def eval_cost(c):
        per_clip = render(c, T - 1) + 2 * T * reward + (3 * T) * F[("clip_b32", 224)]
        return n * per_clip

    items = OrderedDict()
    items["01 prepare: RAFT-large fw+bw flows"] = n * (T - 1) * 2 * F[("raft_large", loss_res)]
    items["02 baseline: VAE encode"] = (n * T + 1) * enc
    items["02 baseline: DDIM inversion (frames + style)"] = (n * T + 1) * n_inv * unet
    items["02 baseline: injected denoising"] = n * denoise_images(cfg, T) * unet
    items["02 baseline: VAE decode"] = n * T * dec
    items[f"03 train main ({cfg.backbone.injection}, {cfg.train.epochs} epochs)"] = train_cost(cfg)
    cells = [(g, s, c) for g, runs in ablations(cfg).items() for s, c in runs.items()]
    for g, s, c in cells:
        if c != cfg:
            items[f"04 ablation train {g}/{s} ({c.backbone.injection}, {c.train.epochs} ep)"] = train_cost(c)
    items[f"04 ablation evaluate x{len(cells)} cells"] = sum(eval_cost(c) for _, _, c in cells)
    items["05 evaluate main"] = eval_cost(cfg)
    return items


def measure_unet(F: dict, latent: int, batch: int, iters: int = 5) -> float:
    """Achieved FLOP/s of the SD-1.5 UNet (random weights) on this machine: fp16 on CUDA, fp32 on CPU."""
    from diffusers import UNet2DConditionModel

    from vstlib.backbones.diffusest.tiny import SD15_UNET

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    unet = UNet2DConditionModel(**SD15_UNET).to(dev).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    iters = iters if dev.type == "cuda" else 1
    x = torch.randn(batch, 4, latent, latent, device=dev, dtype=dtype)
    e = torch.randn(batch, 77, 768, device=dev, dtype=dtype)
    with torch.no_grad():
        unet(x, 500, encoder_hidden_states=e)                    # warm-up (kernels, allocator)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            unet(x, 500, encoder_hidden_states=e)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    rate = F[("unet", latent)] * 1e9 * batch / dt
    print(f"  measured UNet @ {latent}x{latent}, batch {batch}, {dtype}, {dev}: {dt * 1e3:.1f} ms/batch, "
          f"{batch / dt:.3g} images/s, {rate / 1e12:.3g} TFLOP/s")
    return rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peak", type=float, default=989e12, help="dense bf16/fp16 FLOP/s (H100 SXM: 989e12)")
    # measured with --measure on an H100 SXM (2026-11-26): the SD-1.5 UNet, fp16, batch 60, reached
    # 232 TFLOP/s at 32x32 latents and 263 at 64x64, i.e. 23.5-26.6 % of 989 (it was 0.40, assumed)
    ap.add_argument("--mfu", type=float, default=0.26, help="fraction of peak reached")
    ap.add_argument("--load-s", type=float, default=20.0, help="assumed seconds per full model-stack load")
    ap.add_argument("--given", action="store_true", help="UNet / VAE-decode FLOPs from issue 14, not counted")
    ap.add_argument("--measure", action="store_true",
                    help="also time the UNet here (a GPU when present) and report the fraction of --peak reached")
    ap.add_argument("--batch", type=int, default=None, help="UNet batch for --measure (default 60 on CUDA, 1 on CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    t = bench.Timers()
    F = count_flops(timers=t)
    counting = bench.run("FLOP counting on meta tensors", "model", len(F), dict(t.s))
    print(f"FLOPs per image, counted with FlopCounterMode on meta tensors ({counting['seconds']:.0f} s, "
          f"{counting['items_per_s']:.2f} models/s, peak RSS {counting['peak_rss_mb']:.0f} MB):")
    for (k, r), v in F.items():
        extra = f"   (issue 14: {GIVEN[(k, r)]:.0f})" if (k, r) in GIVEN else ""
        print(f"  {k:12s} @ {r:3d}: {v:9.1f} GFLOP{extra}   counted in {t.s[f'{k} @ {r}']:.2f} s")
    if args.given:
        F.update(GIVEN)
    measured = {}
    if args.measure:
        batch = args.batch or (60 if torch.cuda.is_available() else 1)
        for latent in (32, 64):
            r = measure_unet(F, latent, batch)
            measured[f"unet @ {latent}"] = {"batch": batch, "tflop_per_s": r / 1e12, "fraction_of_peak": r / args.peak}
            print(f"    = {100 * r / args.peak:.3g} % of the {args.peak / 1e12:.0f} TFLOP/s peak (the estimate assumes {args.mfu:.0%})")
    rate = args.mfu * args.peak
    cfg = PAPER
    c, s = sampling_steps(cfg)
    print(f"\npaper preset: {cfg.data.n_clips} clips x {cfg.data.n_frames} frames, {cfg.backbone.num_inference_steps} "
          f"steps ({c} content, {s} style), inversion {cfg.backbone.num_inversion_steps} steps, injection "
          f"{cfg.backbone.injection}, {cfg.train.epochs} epochs; H100 at {args.mfu:.0%} of {args.peak / 1e12:.0f} "
          f"TFLOP/s = {rate / 1e12:.0f} TFLOP/s")
    # square frames of res x res (the paper prepares short side 512, aspect kept: wider clips cost more);
    # RAFT is counted at 256 though the flows now run on the prepared 512 frames (an underestimate)
    estimates = []
    for res, label in ((cfg.backbone.resolution, "as configured"), (256, "the first build's 256 px")):
        items = estimate(cfg, F, res)
        total = sum(items.values())
        print(f"\n== DiffuseST at {res} px ({label}), losses at 256 ==")
        for k, v in items.items():
            print(f"  {k:62s} {v / 1e3:10.1f} TFLOP {v * 1e9 / rate:9.1f} s  {v / total:6.1%}")
        n_cells = sum(len(r) for r in ablations(cfg).values())
        loads = 1 + 1 + 1 + 2 * n_cells + 1                  # 01 RAFT, 02, 03, 04 (train+evaluate), 05
        big = max(items, key=items.get)
        print(f"  {'total compute':62s} {total / 1e3:10.1f} TFLOP {total * 1e9 / rate:9.1f} s "
              f"= {total * 1e9 / rate / 3600:.2f} h")
        print(f"  + model loads (not FLOPs): {loads} x {args.load_s:.0f} s = {loads * args.load_s:.0f} s")
        print(f"  largest item: {big} ({items[big] / total:.0%} of the compute)")
        estimates.append({"resolution": res, "label": label, "total_tflop": total / 1e3,
                          "total_s": total * 1e9 / rate, "model_loads": loads, "loads_s": loads * args.load_s,
                          "largest": big, "items": {k: {"tflop": v / 1e3, "s": v * 1e9 / rate} for k, v in items.items()}})
    gflop = {f"{k} @ {r}": v for (k, r), v in F.items()}
    rec = bench.record("paper_estimate", "paper", args, argv, [counting], gflop_per_image=gflop,
                       tflop_per_s_assumed=rate / 1e12, estimates=estimates, measured=measured)
    bench.write_record(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
