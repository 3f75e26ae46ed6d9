"""REINFORCE training of the latent policy, CleanRL style: the whole loop in ``train``.

    run_dir = train(get_config("smoke"))      # results/smoke/runs/main/{log.jsonl, policy.safetensors}

One epoch walks the train clips (order shuffled by seed + epoch). Each clip is rolled out
once (T-1 transitions, batched, no graph); the transitions are then consumed in chunks of
``cfg.train.accumulation``, one Adam step per chunk, each a REINFORCE sample:

    loss = -(log pi(a_t | L_{t-1}, L_t) * A_t).sum() / accumulation,   A_t = r_t - r_t^baseline

log pi is recomputed per chunk under the current weights (a graph kept across an Adam step
would hold stale, in-place-modified parameters). A NaN/Inf reward or gradient skips the update.

Checkpoints (safetensors + JSON, no pickle) hold the policy, Adam's state, the counters and
the RNG state; they are written at clip boundaries (the actions of a clip are sampled once
for all its chunks) as soon as ``checkpoint_every`` updates have passed. ``train(resume=True)``
continues the same curve: an interrupted run and an uninterrupted one log the same lines and
end with the same weights.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vstlib import paths
from vstlib.rollout import build_episode, make_env, rollout
from vstlib.utils import (InputError, VstError, append_jsonl, atomic_save_tensors, atomic_write_json,
                          atomic_write_text, pick_device, progress, read_jsonl, require_file,
                          seed_everything)

CKPT = "checkpoint.safetensors"
CKPT_JSON = "checkpoint.json"
POLICY = "policy.safetensors"
LOG = "log.jsonl"


def train(cfg, run: str = "main", resume: bool = True, max_updates: Optional[int] = None) -> Path:
    """Train the policy of ``cfg`` as run ``run``; returns the run folder.

    ``max_updates`` stops after that many updates in total (counting resumed ones), without a
    final checkpoint: it simulates an interruption (tests) or bounds a budget.
    """
    from vstlib.data import load_manifest
    from vstlib.policy import LatentPolicy, log_prob

    # 1. run folder, seeding, device
    out = paths.ensure(paths.run_dir(cfg.profile, run))
    log_path, ckpt_path = out / LOG, out / CKPT
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)

    # 2. the fixed parts of the environment: clips, DiffuseST, the reward (never trained)
    manifest = load_manifest(cfg.profile)
    train_ids = list(manifest["train"])
    if not train_ids:
        raise InputError("the manifest has no train clips", paths.manifest_path(cfg.profile),
                         "re-run `vst prepare` with more clips (data.n_clips) or data.train_fraction")
    stylizer, reward_model, _ = make_env(cfg, device)

    # 3. the agent
    policy = LatentPolicy.from_config(cfg.policy).to(device)
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
        return out

    # 4. the loop
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
            with torch.no_grad():                                              # collect data only
                tr = rollout(policy, ep, stylizer, reward_model)               # T-1 transitions

            for chunk in torch.arange(ep.n_steps, device=device).split(acc):    # (<=acc,) indices t-1
                if max_updates is not None and step >= max_updates:
                    bar.close()
                    return out                                                   # "interrupted"
                t0 = time.time()
                adv = tr.advantage[chunk]                                       # (n,)
                # log pi under the current weights (earlier chunks of this clip already stepped)
                dist = policy(ep.obs[chunk], ep.obs[chunk + 1])                 # over (n,4,h,w)
                logp = log_prob(dist, tr.actions[chunk])                        # (n,)
                loss = -(logp * adv).sum() / acc

                optimizer.zero_grad(set_to_none=True)
                reason = None
                if not torch.isfinite(adv).all():
                    reason = "non-finite reward"
                    grad_norm = float("nan")
                else:
                    loss.backward()
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(),
                                                                     cfg.train.grad_clip))
                    if not math.isfinite(grad_norm):
                        reason = "non-finite gradient"
                if reason is None:
                    optimizer.step()
                else:                                                           # skip: no step at all
                    optimizer.zero_grad(set_to_none=True)

                record = {"epoch": epoch, "step": step, "clip": cid,
                          "frames": [int(i) + 1 for i in chunk],
                          "reward": _mean(tr.terms["reward"][chunk]), "advantage": _mean(adv),
                          "loss": _num(loss.item())}
                for k in ("style", "content", "temporal"):
                    record[k] = _mean(tr.terms[k][chunk])
                    record[f"base_{k}"] = _mean(tr.base_terms[k][chunk])
                record["base_reward"] = _mean(tr.base_terms["reward"][chunk])
                record.update(sigma=_scalar(policy.sigma), gate=_scalar(policy.gate),
                              grad_norm=_num(grad_norm), skipped=reason is not None, reason=reason,
                              time=round(time.time() - t0, 4))
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


# --------------------------------------------------------------------------- checkpoints
def _rng_tensors() -> dict:
    t = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        t["rng.cuda"] = torch.cuda.get_rng_state()
    return t


def save_checkpoint(out: Path, policy, optimizer, cfg, *, epoch: int, pos: int, step: int,
                    done: bool = False) -> Path:
    """One safetensors file (policy, Adam moments, RNG) whose metadata holds the counters.

    The file is the single source of truth and written atomically, so a crash leaves the
    previous checkpoint; ``checkpoint.json`` is a human-readable copy of the metadata.
    """
    if not all(torch.isfinite(p).all() for p in policy.parameters()):         # never overwrite a good one
        raise VstError("policy weights became NaN/inf; the last good checkpoint is kept", out / CKPT,
                       "lower train.lr or train.grad_clip and resume")
    tensors = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    opt = optimizer.state_dict()
    for i, s in opt["state"].items():
        for k, v in s.items():
            tensors[f"adam.{i}.{k}"] = torch.as_tensor(v)
    tensors.update(_rng_tensors())
    meta = {"epoch": epoch, "pos": pos, "step": step, "done": done,
            "param_groups": opt["param_groups"],
            "python_random": _py_rng_state(), "numpy_random": _np_rng_state(),
            "config": cfg.to_dict()}
    path = atomic_save_tensors(out / CKPT, tensors, metadata={"vstlib": json.dumps(meta, default=list)})
    atomic_write_json(out / CKPT_JSON, meta)
    return path


def _py_rng_state():
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


def _np_rng_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _read_meta(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise InputError(f"not a readable safetensors file ({type(err).__name__})", path,
                         "pass a .safetensors file written by `vst train`") from None
    return json.loads(meta["vstlib"]) if "vstlib" in meta else {}


def load_checkpoint(path: Path, policy, optimizer, cfg) -> dict:
    """Restore policy, Adam and RNG from ``path``; return the counters."""
    from safetensors.torch import load_file

    meta = _read_meta(path)
    if not meta:
        raise InputError("not a vstlib training checkpoint (no metadata)", path,
                         "delete it or train with --no-resume")
    _check_same_run(meta.get("config", {}), cfg.to_dict(), path)
    tensors = load_file(str(path))
    _load_policy_state(policy, {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")}, path)
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("adam."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    v, internal, gauss = meta["python_random"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy_random"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return {k: meta[k] for k in ("epoch", "pos", "step", "done")}


def _check_same_run(saved: dict, now: dict, path: Path) -> None:
    """Resuming under another config would splice two different curves: refuse."""
    ignore = {("train", "epochs"), ("train", "device"), ("train", "checkpoint_every")}
    diff = []
    for sec, val in now.items():
        if not isinstance(val, dict):
            continue
        for k, v in val.items():
            old = saved.get(sec, {}).get(k, v)
            if (sec, k) not in ignore and json.dumps(old, default=list) != json.dumps(v, default=list):
                diff.append(f"{sec}.{k}: {old!r} -> {v!r}")
    if diff:
        raise InputError(f"checkpoint was trained with another config ({'; '.join(diff[:4])})", path,
                         "resume with the same settings, use another --run name, or pass --no-resume")


def save_policy(path: Path, policy, cfg) -> Path:
    """The policy alone (what `vst stylize --policy` and evaluation load)."""
    from dataclasses import asdict

    meta = {"policy": asdict(cfg.policy), "profile": cfg.profile}
    return atomic_save_tensors(path, policy.state_dict(), metadata={"vstlib": json.dumps(meta, default=list)})


def _load_policy_state(policy, sd: dict, path: Path) -> None:
    want = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in sorted(set(want) & set(have)) if have[k] != want[k]]
    if missing or extra or shapes:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(extra[:3])}" if extra else "",
            f"shape {', '.join(shapes[:3])}" if shapes else ""]))
        raise InputError(f"checkpoint does not fit LatentPolicy({_policy_desc(policy)}): {detail}", path,
                         "pass a policy.safetensors written by `vst train` with the same policy "
                         "settings (--profile / --set policy.hidden=...)")
    policy.load_state_dict(sd)


def _policy_desc(policy) -> str:
    n = sum(p.numel() for p in policy.parameters())
    return f"{n} parameters"


def load_policy(path, cfg, device=None):
    """A trained LatentPolicy from ``policy.safetensors`` or a training checkpoint.

    The policy architecture saved with the weights wins over ``cfg.policy``; weights whose
    names or shapes do not fit raise one InputError naming the file.
    """
    from safetensors.torch import load_file

    from vstlib.config import PolicyConfig
    from vstlib.policy import LatentPolicy

    path = require_file(path, "policy checkpoint", "train one with `vst train` (results/<profile>/runs/main/policy.safetensors)")
    meta = _read_meta(path)
    pcfg = cfg.policy
    saved = meta.get("policy") or (meta.get("config") or {}).get("policy")
    if saved:
        pcfg = PolicyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    policy = LatentPolicy.from_config(pcfg)
    tensors = load_file(str(path))
    if any(k.startswith("policy.") for k in tensors):                          # a training checkpoint
        tensors = {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")}
    _load_policy_state(policy, tensors, path)
    policy.eval()
    return policy.to(device) if device is not None else policy


__all__ = ["train", "load_policy", "save_policy", "save_checkpoint", "load_checkpoint",
           "epoch_order", "read_log"]
