"""Training of the latent policy, CleanRL style: the whole loop in ``train``.

    run_dir = train(get_config("smoke"))      # results/smoke/runs/main/{log.jsonl, policy.safetensors}

One epoch walks the train clips (order shuffled by seed + epoch). Each clip is rolled out
once (K x (T-1) transitions, no graph; K = 1 except for RLOO); the transitions are then consumed
in chunks of ``cfg.train.accumulation``, one Adam step per chunk, whose loss the learner
``cfg.train.learner`` computes (``vstlib.rl.learners``: "reinforce" is the paper's

    loss = -(w_t * log pi(a_t | L_{t-1}, L_t) * A_t).mean over the chunk,   A_t = r_t - r_t^baseline

with w_t the truncated importance ratio of actions sampled under the weights of an earlier chunk).
log pi is recomputed per chunk under the current weights (a graph kept across an Adam step
would hold stale, in-place-modified parameters). The global gradient norm is clipped to
``train.grad_clip`` (not in the paper; 0 disables it). A NaN/Inf reward or gradient skips the update.

Checkpoints (``vstlib.rl.checkpoint``: safetensors + JSON, no pickle) hold the policy, Adam's
state, the counters and the RNG state; they are written at clip boundaries (the actions of a
clip are sampled once for all its chunks) as soon as ``checkpoint_every`` updates have passed. ``train(resume=True)``
continues the same curve: an interrupted run and an uninterrupted one log the same lines and
end with the same weights.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vstlib import paths
from vstlib.errors import InputError
from vstlib.files import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from vstlib.rl import policy as policy_lib
from vstlib.rl.checkpoint import (
    CKPT,
    CKPT_JSON,
    POLICY,
    load_checkpoint,
    repair_policy,
    run_lock,
    save_checkpoint,
    save_policy,
)
from vstlib.rl.episodes import (
    build_episode,
    crop_episode,
    make_env,
    random_box,
    rollout,
)
from vstlib.rl.learners import get_learner
from vstlib.runtime import progress, resolve_device, seed_everything
from vstlib.video.clips import load_manifest

LOG = "log.jsonl"


def reinforce_loss(policy, prev: torch.Tensor, cur: torch.Tensor, actions: torch.Tensor,
                   rewards: torch.Tensor, base_rewards: torch.Tensor):
    """The paper's REINFORCE loss of n transitions without importance weights (kept for notebooks).

    prev, cur (n,C,h,w) observed latents L_{t-1}, L_t; actions (n,C,h,w) (constants);
    rewards, base_rewards (n,). Returns (loss, advantage (n,)); divided by the real n.
    """
    advantage = rewards - base_rewards                                         # (n,) A_t = r_t - r_t^base
    logp = policy_lib.log_prob(policy(prev, cur), actions)                     # (n,)
    return -(logp * advantage).sum() / advantage.numel(), advantage



def train(cfg, run: str = "main", resume: bool = True, max_updates: Optional[int] = None) -> Path:
    """Train the policy of ``cfg`` as run ``run``; returns the run folder.

    ``max_updates`` stops after that many updates in total (counting resumed ones), without a
    final checkpoint: it simulates an interruption (tests) or bounds a budget.
    """
    # 1. run folder (locked while we write to it), seeding, device
    out = paths.ensure(paths.run_dir(cfg.profile, run))
    with run_lock(out):
        return _train(cfg, out, run, resume, max_updates)


def _train(cfg, out: Path, run: str, resume: bool, max_updates: Optional[int]) -> Path:
    log_path, ckpt_path = out / LOG, out / CKPT
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)

    # 2. the clips (the fixed environment, DiffuseST and the reward, is built in 4.)
    manifest = load_manifest(cfg.profile)
    train_ids = list(manifest["train"])
    if not train_ids:
        raise InputError("the manifest has no train clips", paths.manifest_path(cfg.profile),
                         "re-run `vst prepare` with more clips (data.n_clips) or data.train_fraction")

    # 3. the agent
    policy = policy_lib.LatentPolicy.from_config(cfg.policy).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    state = {"epoch": 0, "pos": 0, "step": 0, "done": False}
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, policy, optimizer, cfg)             # restores the RNG too
    elif not resume:
        for name in (LOG, CKPT, CKPT_JSON, POLICY):
            (out / name).unlink(missing_ok=True)
    # the log continues from the checkpoint: drop lines written after it (a crash mid-clip)
    _truncate_log(log_path, state["step"])
    atomic_write_json(out / "config.json", cfg.to_dict())
    if state["done"] and state["epoch"] >= cfg.train.epochs:                  # finished (more epochs: go on)
        repair_policy(out, cfg)                                                # killed before the policy write
        return out

    # 4. the loop (the environment is built under fork_rng: building it after the resume moves no RNG)
    stylizer, reward_model, _ = make_env(cfg, device)
    learner = get_learner(cfg.train.learner)
    K = learner.samples(cfg.train)
    acc = cfg.train.accumulation
    episodes: dict = {}                                                         # clip id -> Episode
    step, since_ckpt = state["step"], 0
    total = cfg.train.epochs * len(train_ids) * math.ceil((manifest_frames(manifest, train_ids) - 1) / acc)
    bar = progress(None, desc=f"train {run}", total=total, initial=step)
    for epoch in range(state["epoch"], cfg.train.epochs):
        order = epoch_order(train_ids, cfg.train.seed, epoch)
        start = state["pos"] if epoch == state["epoch"] else 0
        for pos in range(start, len(order)):
            cid = order[pos]
            if cid not in episodes:
                episodes[cid] = build_episode(cfg, cid, stylizer, reward_model, device)
            ep = episodes[cid]
            t_roll = time.time()
            if cfg.train.crop > 0:                                             # a random window per visit
                box = random_box(ep, cfg.train.crop, (cfg.train.seed, epoch, pos))
                ep = crop_episode(ep, box, reward_model, paths.cache_dir(cfg.profile) / "terms")
            with torch.no_grad():                                              # collect data only
                tr = rollout(policy, ep, stylizer, reward_model, samples=K, render=learner.render)
            # the rollout's cost is booked on the clip's first update: "time" and "queries" (reward
            # evaluations: frames rendered and scored) then compare learners per second and per query
            t_roll = time.time() - t_roll
            q_roll = K * ep.n_steps if learner.render else 0

            for chunk in torch.arange(ep.n_steps, device=device).split(acc):    # (<=acc,) indices t-1
                if max_updates is not None and step >= max_updates:
                    bar.close()
                    return out                                                   # "interrupted"
                t0 = time.time()
                loss, info = learner.loss(policy, ep, tr, chunk, stylizer, reward_model, cfg)
                adv = info["advantage"]

                optimizer.zero_grad(set_to_none=True)
                reason = None
                if tr.stylized is not None and not torch.isfinite(tr.stylized[:, chunk + 1]).all():  # (K,n,3,H,W)
                    reason = "non-finite rendered frames"
                    grad_norm = float("nan")
                elif not torch.isfinite(adv).all():
                    reason = "non-finite reward"
                    grad_norm = float("nan")
                else:
                    loss.backward()
                    grad_norm = float(_clip(policy, cfg.train.grad_clip))
                    if not math.isfinite(grad_norm):
                        reason = "non-finite gradient"
                if reason is None:
                    optimizer.step()
                else:                                                           # skip: no step at all
                    optimizer.zero_grad(set_to_none=True)

                record = {"epoch": epoch, "step": step, "clip": cid,
                          "frames": [int(i) + 1 for i in chunk],
                          "reward": _mean(info["reward"]), "advantage": _mean(adv),
                          "loss": _num(loss.item()), "ratio": _mean(info["ratio"])}
                for k in (k for k in info["terms"] if k != "reward"):          # the reward's terms
                    record[k] = _mean(info["terms"][k])
                    record[f"base_{k}"] = _mean(tr.base_terms[k][chunk])
                record["base_reward"] = _mean(tr.base_terms["reward"][chunk])
                record.update(sigma=_scalar(policy.sigma), gate=_scalar(policy.gate),
                              grad_norm=_num(grad_norm), skipped=reason is not None, reason=reason,
                              queries=int(info.get("queries", 0)) + q_roll, time=round(time.time() - t0 + t_roll, 4))
                t_roll, q_roll = 0.0, 0
                append_jsonl(log_path, record)
                step += 1
                since_ckpt += 1
                bar.update(1)
                bar.set_postfix(reward=record["reward"], adv=record["advantage"])

            # checkpoint at a clip boundary once `checkpoint_every` updates have passed
            nxt = (epoch, pos + 1) if pos + 1 < len(order) else (epoch + 1, 0)
            if since_ckpt >= cfg.train.checkpoint_every:
                save_checkpoint(out, policy, optimizer, cfg, epoch=nxt[0], pos=nxt[1], step=step)
                since_ckpt = 0
    bar.close()

    # 5. final checkpoint and the policy for `vst stylize` / evaluation
    save_checkpoint(out, policy, optimizer, cfg, epoch=cfg.train.epochs, pos=0, step=step, done=True)
    save_policy(out / POLICY, policy, cfg)
    return out


# --------------------------------------------------------------------------- helpers
def _clip(policy, max_norm: float) -> torch.Tensor:
    """Global gradient norm, clipped to ``max_norm`` unless it is 0 (clipping off)."""
    params = [p for p in policy.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.clip_grad_norm_(params, float("inf"))               # the norm only


def epoch_order(ids: list, seed: int, epoch: int) -> list:
    """Deterministic shuffle of the train clips for one epoch (own RNG: not the global one)."""
    rng = np.random.default_rng([seed, epoch])
    return [ids[i] for i in rng.permutation(len(ids))]


def manifest_frames(manifest: dict, ids: list) -> int:
    n = {c["id"]: c.get("n_frames", 2) for c in manifest.get("clips", [])}
    return max((int(n.get(i, 2)) for i in ids), default=2)


def _num(x: float):
    """JSON-friendly float: NaN/Inf become null (strict JSON readers choke on NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(t: torch.Tensor):
    return _num(t.float().mean().item())


def _scalar(x):
    return _num(torch.as_tensor(x).detach().float().mean().item())


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path) if r.get("step", -1) < step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def read_log(run_dir: Path):
    """The training log of a run as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame(read_jsonl(Path(run_dir) / LOG))


__all__ = ["train", "reinforce_loss", "epoch_order", "read_log"]
