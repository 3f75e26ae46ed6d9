"""Training the policy, CleanRL style: the whole loop in ``train``, top to bottom.

    run_dir = train(cfg)      # results/<profile>/runs/main/{log.jsonl, checkpoint.*, policy.safetensors}

An epoch visits the train clips (order shuffled by seed and epoch); each visit takes a random
window of ``train.crop`` latent cells (0: the whole clip), lets the learner collect what it needs
(``learners.LEARNERS[train.learner].collect``, no graph) and then takes one Adam step per chunk of
``train.accumulation`` transitions on the learner's loss. The global gradient norm is clipped to
``train.grad_clip`` (0: off); a NaN/Inf reward, frame or gradient skips the step. Checkpoints
(policy, Adam, counters, RNG) are written at clip boundaries once ``checkpoint_every`` steps have
passed, so ``train(resume=True)`` continues the same curve: an interrupted and an uninterrupted
run log the same lines and end with the same weights. Under ``torchrun`` each rank visits its own
clips (``distributed``): one update is the single-process update on the union of the ranks' chunks,
and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from vstlib import paths
from vstlib.errors import InputError
from vstlib.files import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
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
from vstlib.rl.constraints import START, with_start
from vstlib.rl.distributed import Ranks, ranks
from vstlib.rl.episodes import build_episode, crop_episode, make_env, random_box
from vstlib.rl.learners import LEARNERS, Agent
from vstlib.rl.policy import LatentPolicy
from vstlib.rl.step import policy_frames
from vstlib.runtime import progress, seed_everything
from vstlib.video.clips import load_manifest

LOG = "log.jsonl"


def train(cfg, run: str = "main", resume: bool = True, max_updates: Optional[int] = None) -> Path:
    """Train the policy of ``cfg`` as run ``run``; returns the run folder. ``max_updates`` stops after
    that many updates in all, without a final checkpoint (an interruption, for tests and budgets)."""
    out = paths.ensure(paths.run_dir(cfg.profile, run))
    with ranks(cfg.train.device) as ddp, ddp.main_only(run_lock(out)):       # torchrun: rank 0 holds the lock
        # 1. the agent, resumed from its last checkpoint (weights, Adam moments, counters, RNG)
        seed_everything(cfg.train.seed)
        policy = LatentPolicy.from_config(cfg.policy).to(cfg.train.device)
        start = copy.deepcopy(policy).eval()                                   # untrained: reward.bound_by="start"
        agent = Agent(cfg, policy).to(cfg.train.device)                       # multipliers (+ critic)
        opt = torch.optim.Adam(param_groups(policy, agent, cfg.train))
        with ddp.main_first():                                                 # rank 0 writes, the others read
            state = restore(out, policy, opt, cfg, resume, agent, write=ddp.main)
        if state["done"] and state["epoch"] >= cfg.train.epochs:                # finished (more epochs: go on)
            ddp.write(repair_policy, out, cfg)
            return out
        # 2. the environment (frozen stylizer and reward) and the learner
        env, learner, episodes = make_env(cfg), LEARNERS.pick(cfg.train.learner), {}
        clip_ids = train_clips(cfg.profile)
        step, since_ckpt = state["step"], 0
        bar = progress(None, desc=f"train {run}", total=n_updates(cfg, clip_ids), initial=step)
        # 3. epochs x clip visits x chunks of `accumulation` transitions, one Adam step per chunk;
        #    torchrun: each rank visits its shard of the clips (`distributed`), one step on the union
        for epoch, pos, cid, last in ddp.shard(visits(clip_ids, cfg.train, state)):
            ep = None                                                          # None: no visit left in the round
            if cid is not None:
                if cid not in episodes:                                        # whole clips: bounded once
                    ep = build_episode(cfg, cid, env)
                    episodes[cid] = ep if cfg.train.crop > 0 else bounded(ep, start, env, cfg.reward)
                ep = episodes[cid]
                if cfg.train.crop > 0:                                         # a random window per visit
                    box = random_box(ep, cfg.train.crop, (cfg.train.seed, epoch, pos))
                    ep = bounded(crop_episode(ep, box, env.reward, paths.cache_dir(cfg.profile) / "terms"), start,
                                 env, cfg.reward)
                ddp.seed(cfg.train.seed, epoch, pos)
                t0 = time.time()
                batch = learner.collect(policy, env, ep, agent, cfg.train)     # no graph
                cost = {"time": time.time() - t0, "queries": getattr(batch, "queries", 0)}   # on the first step
            for chunk in ddp.chunks(0 if ep is None else ep.n_steps, cfg.train.accumulation, env.device):
                if max_updates is not None and step >= max_updates:
                    return out
                t0 = time.time()
                loss, info = learner.loss(policy, env, ep, batch, chunk, agent, cfg.train) if chunk is not None \
                    else (None, None)                                          # a rank with fewer chunks joins in
                grad_norm, skipped = update(policy, opt, loss, info, cfg.train.grad_clip, agent, ddp,
                                            0 if chunk is None else chunk.numel())
                if skipped is None:                                            # dual ascent on the constraints
                    terms, base = ({}, {}) if chunk is None else (_terms(info), {k: v[chunk] for k, v in
                                                                                 ep.base_terms.items()})
                    agent.multipliers.ascend(*ddp.union(terms, base), cfg.train.dual_lr)
                if ddp.main and chunk is not None:                             # rank 0's chunk, the union's step
                    rec = record(epoch, step, cid, chunk, ep, info, loss, policy, grad_norm, skipped, agent)
                    rec.update(queries=info["queries"] + cost["queries"],
                               time=round(time.time() - t0 + cost["time"], 4))
                    append_jsonl(out / LOG, rec)
                cost = {"time": 0.0, "queries": 0}
                step, since_ckpt = step + 1, since_ckpt + 1
                bar.update(1)
            if since_ckpt >= cfg.train.checkpoint_every:                       # at a clip boundary
                ddp.write(save_checkpoint, out, policy, opt, cfg, **next_visit(*last, len(clip_ids)), step=step,
                          agent=agent)
                since_ckpt = 0
        bar.close()
        # 4. the final checkpoint, and the policy alone for evaluation and `vst stylize`
        ddp.write(save_checkpoint, out, policy, opt, cfg, epoch=cfg.train.epochs, pos=0, step=step, done=True,
                  agent=agent)
        ddp.write(save_policy, out / POLICY, policy, cfg)
    return out


# --------------------------------------------------------------------------- the loop's parts
def param_groups(policy, agent, cfg_train) -> list:
    """The policy at ``train.lr``; the learner's own networks (a critic) at ``train.critic_lr``."""
    groups = [{"params": list(policy.parameters()), "lr": cfg_train.lr}]
    if any(True for _ in agent.parameters()):
        groups.append({"params": list(agent.parameters()), "lr": cfg_train.critic_lr})
    return groups


@torch.no_grad()
def bounded(ep, start, env, cfg_reward):
    """``ep`` with the untrained policy ``start``'s terms where ``reward.bound_by="start"`` reads them."""
    if cfg_reward.bound_by != "start":
        return ep
    return with_start(ep, policy_frames(start, env.stylizer, ep.base, ep.clip), env.reward, cfg_reward)


def _terms(info: dict) -> dict:
    """The update's terms as (n,): the mean over samples."""
    return {k: v.float().mean(0) for k, v in info["terms"].items()}


def restore(out: Path, policy, opt, cfg, resume: bool, agent=None, write: bool = True) -> dict:
    """The counters to start from: the last checkpoint's (policy, Adam and RNG restored) or zero (the
    run folder cleared); the log is cut back to the checkpoint (lines of a crash mid-clip go).
    ``write=False`` (ranks > 0): only read the checkpoint, rank 0 tidies the folder."""
    state = {"epoch": 0, "pos": 0, "step": 0, "done": False}
    if resume and (out / CKPT).exists():
        state = load_checkpoint(out / CKPT, policy, opt, cfg, agent)
    if not write:
        return state
    if not resume:
        for name in (LOG, CKPT, CKPT_JSON, POLICY):
            (out / name).unlink(missing_ok=True)
    if (out / LOG).exists():
        keep = [r for r in read_jsonl(out / LOG) if r.get("step", -1) < state["step"]]
        atomic_write_text(out / LOG, "".join(json.dumps(r) + "\n" for r in keep))
    atomic_write_json(out / "config.json", cfg.to_dict())
    return state


def update(policy, opt, loss: Optional[torch.Tensor], info: Optional[dict], max_norm: float, agent=None,
           ddp: Ranks = Ranks(), n: int = 0) -> tuple[float, Optional[str]]:
    """One Adam step on ``loss``, unless the frames, the reward or the gradient are not finite:
    (the policy's global gradient norm, the reason the step was skipped or None). The policy's and
    the critic's gradients are clipped to ``max_norm`` each. Under torchrun the gradients are the
    union's (``ddp.average_gradients``, this rank's loss a mean over ``n`` transitions; no loss: no
    chunk) and any rank's reason skips the step on all."""
    opt.zero_grad(set_to_none=True)
    reason = None
    if info is not None and not info["finite_frames"]:
        reason = "non-finite rendered frames"
    elif info is not None and not torch.isfinite(info["advantage"]).all():
        reason = "non-finite reward"
    if (reason := ddp.reason(reason)) is not None:
        return float("nan"), reason
    if loss is not None:
        loss.backward()
    ddp.average_gradients(list(policy.parameters()) + list(agent.parameters() if agent is not None else ()), n)
    params = [p for p in policy.parameters() if p.grad is not None]
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
    critic = [p for p in (agent.parameters() if agent is not None else ()) if p.grad is not None]
    if critic:
        norm_c = float(torch.nn.utils.clip_grad_norm_(critic, max_norm if max_norm > 0 else float("inf")))
        norm = norm if math.isfinite(norm_c) else norm_c
    if not math.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        return norm, "non-finite gradient"
    opt.step()
    return norm, None


def record(epoch: int, step: int, cid: str, chunk, ep, info: dict, loss, policy, grad_norm: float,
           skipped: Optional[str], agent=None) -> dict:
    """One line of ``log.jsonl``: the update's reward, its terms beside the baseline's, the policy's
    gate and sigma, the multipliers, the critic's loss, the gradient norm and whether (why) it was skipped."""
    rec = {"epoch": epoch, "step": step, "clip": cid, "frames": [int(i) + 1 for i in chunk],
           "reward": _mean(info["reward"]), "advantage": _mean(info["advantage"]), "loss": _num(loss.item()),
           "ratio": _mean(info["ratio"])}
    for k in (k for k in info["terms"] if k != "reward"):
        rec[k], rec[f"base_{k}"] = _mean(info["terms"][k]), _mean(ep.base_terms[k][chunk])
    for k in (k for k in ep.base_terms if k.startswith(START)):               # the start's, where bounds read it
        rec[k] = _mean(ep.base_terms[k][chunk])
    base = {k: v[chunk] for k, v in ep.base_terms.items()}
    rec["base_reward"] = _mean(agent.reward(base, base) if agent is not None else base["reward"])   # on r^L
    rec.update(sigma=_mean(policy.sigma), gate=_mean(policy.gate), grad_norm=_num(grad_norm),
               skipped=skipped is not None, reason=skipped)
    if agent is not None:
        rec.update(agent.multipliers.values())
    for k in ("critic_loss", "value"):
        if k in info:
            rec[k] = _mean(info[k])
    return rec


def train_clips(profile: str) -> list:
    manifest = load_manifest(profile)
    if not manifest["train"]:
        raise InputError("the manifest has no train clips", paths.manifest_path(profile),
                         "re-run `vst prepare` with more clips (data.n_clips) or data.train_fraction")
    return list(manifest["train"])


def visits(clip_ids: list, cfg_train, state: dict) -> Iterator[tuple]:
    """(epoch, position, clip id) from the checkpoint's position on; each epoch's order is a shuffle
    by (seed, epoch) from its own RNG."""
    for epoch in range(state["epoch"], cfg_train.epochs):
        order = epoch_order(clip_ids, cfg_train.seed, epoch)
        for pos in range(state["pos"] if epoch == state["epoch"] else 0, len(order)):
            yield epoch, pos, order[pos]


def next_visit(epoch: int, pos: int, n: int) -> dict:
    return {"epoch": epoch, "pos": pos + 1} if pos + 1 < n else {"epoch": epoch + 1, "pos": 0}


def epoch_order(ids: list, seed: int, epoch: int) -> list:
    """Deterministic shuffle of the train clips for one epoch (own RNG: not the global one)."""
    rng = np.random.default_rng([seed, epoch])
    return [ids[i] for i in rng.permutation(len(ids))]


def n_updates(cfg, clip_ids: list) -> int:
    n = {c["id"]: int(c.get("n_frames", 2)) for c in load_manifest(cfg.profile).get("clips", [])}
    longest = max((n.get(i, 2) for i in clip_ids), default=2)
    return cfg.train.epochs * len(clip_ids) * math.ceil((longest - 1) / cfg.train.accumulation)


def _num(x: float):
    """JSON-friendly float: NaN/Inf become null (strict JSON readers choke on NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(t) -> Optional[float]:
    return _num(torch.as_tensor(t).detach().float().mean().item())


def read_log(run_dir: Path):
    """The training log of a run as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame(read_jsonl(Path(run_dir) / LOG))


__all__ = ["train", "read_log", "epoch_order", "restore", "update", "visits", "LOG"]
