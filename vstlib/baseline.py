"""The per-frame DiffuseST baseline over every prepared clip (what the policy starts from).

    info = run_baseline(get_config("smoke"))   # results/smoke/baseline/<clip>/00000.png, summary.json

Stylizer outputs are cached on disk by the backbone, so training and evaluation reuse them;
a second call costs no UNet evaluations.
"""
from __future__ import annotations

import time

import torch

from vstlib import paths
from vstlib.evaluation.tables import profile_note
from vstlib.files import atomic_write_json
from vstlib.rl.episodes import make_env
from vstlib.runtime import progress
from vstlib.video.clips import load_clip, load_manifest
from vstlib.video.io import save_frames


def run_baseline(cfg) -> dict:
    """Stylize every clip of the manifest; returns {clip_id: {split, n_frames, seconds, unet_calls}}."""
    env = make_env(cfg)
    device, stylizer, style = env.device, env.stylizer, env.style
    manifest = load_manifest(cfg.profile)
    split_of = {cid: split for split in ("train", "test") for cid in manifest.get(split, [])}
    out_dir = paths.results_dir(cfg.profile) / "baseline"
    info = {}
    for c in progress(manifest["clips"], desc="baseline"):
        cid = c["id"]
        frames = load_clip(cfg.profile, cid).to(device)                        # (T,3,H,W)
        calls0, t0 = getattr(stylizer, "unet_calls", 0), time.perf_counter()
        out = stylizer.stylize(frames, style)                                  # images (T,3,H,W)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        save_frames(out.images, out_dir / cid)
        info[cid] = {"split": split_of.get(cid, c.get("split")), "n_frames": int(frames.shape[0]),
                     "seconds": round(seconds, 3), "unet_calls": int(getattr(stylizer, "unet_calls", 0) - calls0)}
    atomic_write_json(out_dir / "summary.json",
                      {"profile": cfg.profile, "note": profile_note(cfg.profile),
                       "model_id": cfg.backbone.model_id, "device": str(device), "clips": info})
    return info


__all__ = ["run_baseline"]
