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
import os
import random
import socket
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from vstlib import cache
from vstlib.config import PolicyConfig, section_from_dict
from vstlib.errors import InputError, VstError, require_file
from vstlib.files import atomic_write_json
from vstlib.rl.policy import LatentPolicy

CKPT = "checkpoint.safetensors"
CKPT_JSON = "checkpoint.json"
POLICY = "policy.safetensors"
LOCK = ".lock"
CKPT_FIX = "delete it to start over, or train with --no-resume"
POLICY_FIX = ("pass a policy.safetensors written by `vst train` "
              "(results/<profile>/runs/<run>/policy.safetensors), or retrain it")


def _rng_tensors() -> dict:
    t = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        t["rng.cuda"] = torch.cuda.get_rng_state()
    return t


def save_checkpoint(out: Path, policy, optimizer, cfg, *, epoch: int, pos: int, step: int,
                    done: bool = False, agent=None) -> Path:
    """One safetensors file (policy, Adam moments, RNG) whose metadata holds the counters.

    The file is the single source of truth and written atomically, so a crash leaves the
    previous checkpoint; ``checkpoint.json`` is a human-readable copy of the metadata.
    """
    if not all(torch.isfinite(p).all() for p in policy.parameters()):         # never overwrite a good one
        raise VstError("policy weights became NaN/inf; the last good checkpoint is kept", out / CKPT,
                       "lower train.lr or train.grad_clip and resume")
    tensors = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    if agent is not None:                                   # the learner's own state: critic, multipliers
        tensors.update({f"agent.{k}": v for k, v in agent.state_dict().items()})
    opt = optimizer.state_dict()
    for i, s in opt["state"].items():
        for k, v in s.items():
            tensors[f"adam.{i}.{k}"] = torch.as_tensor(v)
    tensors.update(_rng_tensors())
    meta = {"epoch": epoch, "pos": pos, "step": step, "done": done,
            "param_groups": opt["param_groups"],
            "python_random": _py_rng_state(), "numpy_random": _np_rng_state(),
            "config": cfg.to_dict()}
    path = cache.save_tensors(out / CKPT, tensors, metadata={"vstlib": json.dumps(meta, default=list)})
    atomic_write_json(out / CKPT_JSON, meta)
    return path


def _py_rng_state():
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


def _np_rng_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _read(path: Path, fix: str) -> tuple[dict, dict]:
    """(metadata "vstlib" as a dict, tensors) of a file we wrote: it decodes, its content hash (when
    it carries one: policies exported elsewhere do not) matches, its weights are finite."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - truncated/garbled/pickle files raise many kinds
        raise InputError(f"not a readable safetensors file ({type(err).__name__})", path, fix) from None
    if cache.HASH_KEY in raw and raw[cache.HASH_KEY] != cache.content_hash(tensors):
        raise InputError("damaged: its content hash does not match its metadata", path, fix)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"holds NaN/inf weights ({', '.join(bad[:3])})", path, fix)
    try:
        meta = json.loads(raw["vstlib"]) if "vstlib" in raw else {}
    except json.JSONDecodeError:
        raise InputError("its 'vstlib' metadata is not JSON", path, fix) from None
    if not isinstance(meta, dict):
        raise InputError("its 'vstlib' metadata is not a JSON object", path, fix)
    return meta, tensors


def load_checkpoint(path: Path, policy, optimizer, cfg, agent=None) -> dict:
    """Restore policy, the learner's state (``agent``), Adam and RNG from ``path``; return the counters."""
    meta, tensors = _read(path, CKPT_FIX)
    need = {"epoch", "pos", "step", "done", "param_groups", "python_random", "numpy_random"}
    if not need <= set(meta) or "rng.torch" not in tensors:
        raise InputError("not a complete vstlib training checkpoint (metadata or RNG state missing)", path,
                         CKPT_FIX)
    _check_same_run(meta.get("config", {}), cfg.to_dict(), path)
    _load_policy_state(policy, {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")}, path, CKPT_FIX)
    if agent is not None:
        try:
            agent.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("agent.")})
        except RuntimeError as err:
            raise InputError(f"the checkpoint's learner state does not fit this learner ({str(err)[:200]})", path,
                             CKPT_FIX) from None
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
    # what a run's curve does not depend on: its length, where it runs, how often it saves, which
    # OTHER runs the notebooks make (ablation grids, the seed list) and how runs are scored (eval)
    ignore = {("train", "epochs"), ("train", "device"), ("train", "checkpoint_every"),
              ("train", "ablation_grids"), ("train", "seeds")}
    diff = []
    for sec, val in now.items():
        if not isinstance(val, dict) or sec in ("eval", "compare"):
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
    return cache.save_tensors(path, policy.state_dict(), metadata={"vstlib": json.dumps(meta, default=list)})


def _load_policy_state(policy, sd: dict, path: Path, fix: Optional[str] = None) -> None:
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
                         fix or "pass a policy.safetensors written by `vst train` with the same policy "
                         "settings (--profile / --set policy.hidden=...)")
    policy.load_state_dict(sd)


def _policy_desc(policy) -> str:
    n = sum(p.numel() for p in policy.parameters())
    return f"{n} parameters"


def load_policy(path, cfg_policy, device=None, latent_channels: Optional[int] = None):
    """A trained LatentPolicy from ``policy.safetensors`` or a training checkpoint, checked up front.

    The policy architecture saved with the weights wins over ``cfg_policy``. Raises one
    InputError naming the file when it does not decode, its hash or weights are bad (NaN/inf),
    its metadata is not JSON or names an unknown policy field, it was trained for latents of
    another size than ``latent_channels`` (the backbone's; default ``cfg_policy``'s), or its
    weights' names or shapes do not fit.
    """
    path = require_file(path, "policy checkpoint", "train one with `vst train` (results/<profile>/runs/main/policy.safetensors)")
    if path.is_dir():
        raise InputError("is a folder, not a policy file", path, "pass the policy.safetensors inside it")
    meta, tensors = _read(path, POLICY_FIX)
    pcfg = cfg_policy
    saved = meta.get("policy") or (meta.get("config") or {}).get("policy")
    if saved:
        try:
            pcfg = section_from_dict(PolicyConfig, saved)
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"its policy metadata does not fit this version of vstlib ({err.args[0]})", path,
                             POLICY_FIX) from None
    want = cfg_policy.latent_channels if latent_channels is None else int(latent_channels)
    if pcfg.latent_channels != want:
        raise InputError(f"policy was trained on {pcfg.latent_channels}-channel latents, the backbone has {want}",
                         path, "pass a policy trained with this profile's backbone (--profile / --set backbone...)")
    policy = LatentPolicy.from_config(pcfg)
    if any(k.startswith("policy.") for k in tensors):                          # a training checkpoint
        tensors = {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")}
    _load_policy_state(policy, tensors, path)
    policy.eval()
    return policy.to(device) if device is not None else policy


def repair_policy(out: Path, cfg) -> Optional[Path]:
    """A finished run whose policy.safetensors is missing or damaged (a kill between the final
    checkpoint and the policy write): rewrite it from the final checkpoint. Returns its path if
    rewritten, None when nothing needed doing."""
    pol, ckpt = Path(out) / POLICY, Path(out) / CKPT
    if not ckpt.exists():
        return None
    meta, tensors = _read(ckpt, CKPT_FIX)
    if not meta.get("done"):
        return None
    if pol.exists():
        try:
            load_policy(pol, cfg.policy)
            return None
        except InputError as err:
            print(f"run: {pol} is damaged ({err}); rewriting it from {ckpt.name}", flush=True)
    policy = LatentPolicy.from_config(cfg.policy)
    _load_policy_state(policy, {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")}, ckpt, CKPT_FIX)
    return save_policy(pol, policy, cfg)


# --------------------------------------------------------------------------- run-folder lock
class RunLocked(VstError):
    """Another process holds the run folder."""


@contextmanager
def run_lock(out: Path) -> Iterator[Path]:
    """Hold ``out/.lock`` while a run writes to ``out``; a second holder is refused with one line.

    ``fcntl.flock`` on the open file: the kernel drops the lock when its holder dies (SIGKILL,
    power loss of a local disk), so a stale lock never blocks; the file keeps the holder's pid
    and host only to name it in the refusal. (``filelock`` takes the same flock but has no place
    for the holder's name.)
    """
    import fcntl

    path = Path(out) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunLocked(f"run folder is in use by {holder}", Path(out),
                            "wait for that run to finish (or stop it), or use another --run name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["save_checkpoint", "load_checkpoint", "save_policy", "load_policy", "repair_policy", "run_lock",
           "RunLocked", "CKPT", "CKPT_JSON", "POLICY", "LOCK"]
