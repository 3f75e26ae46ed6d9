"""THE cache scheme: a file named by a hash of its inputs, written atomically, validated on read.

    path = cache_dir / f"flows-{key(clip_id, cfg_flow)}.safetensors"
    flows = cached_tensors(path, build=lambda: {...}, what="RAFT flows")

The hashes, one of each kind: ``key(*parts)`` of JSON-able parts (dataclass sections, dicts,
strings), ``content_hash(tensors)`` of tensors, ``file_hash(path)`` of a file's bytes.
``cached_tensors`` writes safetensors whose metadata carry a sha256 of the tensor bytes; on
read, the file must decode, hold the expected keys, match its content hash and be finite.
A truncated, garbled or NaN-filled file is deleted and rebuilt with a one-line notice: a
damaged cache never crashes a run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from safetensors import safe_open

from vstlib.files import atomic_save_tensors

HASH_KEY = "vstlib.sha256"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def key(*parts: Any, n: int = 16) -> str:
    """Short stable sha256 of JSON-able parts (sorted keys; tuples as lists; dataclasses as dicts)."""
    text = json.dumps([_jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def file_hash(path: os.PathLike) -> str:
    """sha256 of a file's bytes (a policy file's scores are keyed by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(tensors: dict) -> str:
    """sha256 over names, dtypes, shapes and bytes of a dict of tensors (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: os.PathLike, tensors: dict, metadata: Optional[dict] = None) -> Path:
    """safetensors with the content hash in its metadata, written atomically."""
    meta = {**(metadata or {}), HASH_KEY: content_hash(tensors)}
    return atomic_save_tensors(path, tensors, metadata=meta)


def read_tensors(path: os.PathLike, expect: Optional[Iterable[str]] = None, device: str = "cpu") -> dict:
    """Load and validate a cache file; raises ``ValueError`` saying what is wrong with it."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            # cloned: the tensors must not stay backed by the file's mapping (an in-place rewrite of
            # the file would change them under the caller)
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - truncated/garbled files raise many kinds
        raise ValueError(f"does not decode ({type(err).__name__})") from None
    missing = sorted(set(expect or ()) - set(tensors))
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    if meta.get(HASH_KEY) != content_hash(tensors):
        raise ValueError("content hash does not match")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"holds NaN/inf in {', '.join(bad)}")
    return {k: v.to(device) for k, v in tensors.items()}


def notice(path: os.PathLike, what: str, why: str) -> None:
    print(f"cache: {what} at {path} {why}; rebuilding it", file=sys.stderr, flush=True)


def cached_tensors(path: os.PathLike, build: Callable[[], dict], what: str,
                   expect: Optional[Iterable[str]] = None, metadata: Optional[dict] = None,
                   device: str = "cpu") -> dict:
    """The tensors stored at ``path`` if it holds a valid cache, else ``build()`` (saved there).

    ``expect``: keys the file must hold (default: none checked beyond decoding, hash, finite).
    A damaged file is deleted and rebuilt with a one-line notice on stderr.
    """
    path = Path(path)
    if path.exists():
        try:
            return read_tensors(path, expect, device)
        except ValueError as err:
            notice(path, what, str(err))
            path.unlink(missing_ok=True)
    tensors = build()
    save_tensors(path, tensors, metadata)
    return tensors


__all__ = ["key", "file_hash", "content_hash", "save_tensors", "read_tensors", "cached_tensors", "HASH_KEY"]
