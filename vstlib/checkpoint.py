"""Checkpoints: the policy alone and the whole training state, as safetensors + JSON (no pickle).

    save_checkpoint(run_dir, policy, optimizer, cfg, epoch=..., pos=..., step=...)
    state = load_checkpoint(run_dir / CKPT, policy, optimizer, cfg)   # restores the RNG too
    policy = load_policy(run_dir / POLICY, cfg.policy)               # evaluation, `vst stylize`

A training checkpoint is one safetensors file (policy, Adam moments, torch/CUDA RNG) whose
metadata hold the counters, Python/NumPy RNG states and the config; written atomically, so a
crash leaves the previous one. ``checkpoint.json`` is a human-readable copy of the metadata.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from vstlib.config import PolicyConfig, section_from_dict
from vstlib.policy import LatentPolicy
from vstlib.utils import InputError, VstError, atomic_save_tensors, atomic_write_json, require_file

CKPT = "checkpoint.safetensors"
CKPT_JSON = "checkpoint.json"
POLICY = "policy.safetensors"


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


def load_policy(path, cfg_policy, device=None):
    """A trained LatentPolicy from ``policy.safetensors`` or a training checkpoint.

    The policy architecture saved with the weights wins over ``cfg_policy``; weights whose
    names or shapes do not fit raise one InputError naming the file.
    """
    from safetensors.torch import load_file

    path = require_file(path, "policy checkpoint", "train one with `vst train` (results/<profile>/runs/main/policy.safetensors)")
    meta = _read_meta(path)
    pcfg = cfg_policy
    saved = meta.get("policy") or (meta.get("config") or {}).get("policy")
    if saved:
        pcfg = section_from_dict(PolicyConfig, saved)
    policy = LatentPolicy.from_config(pcfg)
    tensors = load_file(str(path))
    if any(k.startswith("policy.") for k in tensors):                          # a training checkpoint
        tensors = {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")}
    _load_policy_state(policy, tensors, path)
    policy.eval()
    return policy.to(device) if device is not None else policy


__all__ = ["save_checkpoint", "load_checkpoint", "save_policy", "load_policy", "CKPT", "CKPT_JSON", "POLICY"]
