"""Signal-to-noise of the policy-gradient learners on a real profile (issue 11, item 3).

    python benchmarks/gradient_snr.py                       # cpu profile, the paper's REINFORCE setting
    python benchmarks/gradient_snr.py --samples 1 8 32 --learners reinforce rloo --seeds 3 [--threads 1]

For an untrained policy with the paper's settings (``config.ablations``' "reinforce_paper" cell:
gate 5, sigma 0.1, the (L_{t-1}, L_t) observation, raw reward 10/1/10), on the central training
window of each train clip: the cosine between a score-function gradient estimate from K rollouts
and the pathwise gradient of the same reward (``learners.gradient_cosine``; exact up to sigma).
About 1: the advantage carries the direction; about 0: the update is noise. Prints mean and std
over clips x seeds. Needs the profile's prepared data (``vst prepare`` / notebook 01). Slow on a
CPU: K rollouts render K x (T-1) frames. Also prints each row's seconds per estimate (one clip x
seed), estimates/s and peak resident memory, and writes ``results/<profile>/bench/gradient_snr.json``
(``vstlib.bench``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vstlib import bench
from vstlib.config import ablations, get_config
from vstlib.rl.episodes import build_episode, crop_episode, make_env
from vstlib.rl.learners import gradient_cosine
from vstlib.rl.policy import LatentPolicy
from vstlib.video.clips import load_manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--samples", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--learners", nargs="+", default=["reinforce"], choices=["reinforce", "rloo"])
    ap.add_argument("--seeds", type=int, default=2, help="policy initialisations per clip")
    ap.add_argument("--clips", type=int, default=2, help="train clips used (the first N)")
    ap.add_argument("--exact", type=int, default=8, help="pathwise draws averaged into the reference gradient")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = get_config(args.profile)
    cfg = ablations(base.override(train={"ablation_grids": ("learner",)}))["learner"]["reinforce_paper"]
    t_setup = time.perf_counter()
    env = make_env(cfg)
    eps = []
    for cid in load_manifest(cfg.profile)["train"][:args.clips]:
        ep = build_episode(cfg, cid, env)
        H, W = ep.clip.L.shape[-2:]
        k = min(cfg.train.crop or max(H, W), H, W)                   # the central training window
        eps.append(crop_episode(ep, ((H - k) // 2, (W - k) // 2, k, k), env.reward))
    print(f"{cfg.profile} profile, the paper's setting: gate {cfg.policy.gate_init:g}, sigma "
          f"{cfg.policy.sigma_init:g}, {cfg.policy.observation} observation, reward normalize="
          f"{cfg.reward.normalize}, weights {cfg.reward.w_style:g}/{cfg.reward.w_content:g}/{cfg.reward.w_temp:g}; "
          f"{len(eps)} clips x {args.seeds} seeds, windows of {eps[0].clip.L.shape[-1]} latent cells")
    setup_s = time.perf_counter() - t_setup                         # the stylizer, reward and episodes, once
    print("| learner | K rollouts | cosine with the pathwise gradient (mean ± std) | seconds | s/estimate | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    runs = []
    for learner in args.learners:
        for K in args.samples:
            if learner == "rloo" and K < 2:
                continue
            c = cfg.override(train={"learner": learner, "samples": max(K, 2) if learner == "rloo" else 1})
            t0, cos = time.perf_counter(), []
            for seed in range(args.seeds):
                for ep in eps:
                    torch.manual_seed(seed)
                    policy = LatentPolicy.from_config(c.policy)
                    cos.append(gradient_cosine(policy, env, ep, c, learner=learner, samples=K,
                                                  exact_samples=args.exact))
            t = torch.tensor(cos)
            std = t.std().item() if len(t) > 1 else 0.0
            # one item is one cosine: K rollouts and the pathwise reference on one clip for one seed
            r = bench.run(f"{learner}, K={K}", "estimate", len(cos), {"gradient_cosine": time.perf_counter() - t0},
                          learner=learner, samples=K, cosine_mean=t.mean().item(), cosine_std=std)
            runs.append(r)
            print(f"| {learner} | {K} | {r['cosine_mean']:+.3f} ± {std:.3f} | {r['seconds']:.0f} | "
                  f"{r['s_per_item']['gradient_cosine']:.2f} | {r['peak_rss_mb']:.0f} |", flush=True)
    rec = bench.record("gradient_snr", args.profile, args, argv, runs, setup_s=setup_s, clips=len(eps),
                       window=eps[0].clip.L.shape[-1])
    bench.write_record(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
