"""Read a vendored weight file (fp16 safetensors under vstlib/assets), validated, as float32 tensors.

Every vendored file carries ``sha256`` of its tensor contents in its safetensors metadata
(written by ``scripts/vendor_assets.py``); a missing, truncated or altered file is one
:class:`~vstlib.errors.InputError` naming it and the fix, never a traceback from deep in torch.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from vstlib.cache import content_hash
from vstlib.errors import InputError

FIX = ("restore it (`git checkout -- vstlib/assets`) or rebuild the vendored assets with "
       "`python scripts/vendor_assets.py` (needs ../shared/assets)")


def load_weights(path: os.PathLike, what: str,
                 shapes: Optional[Mapping[str, tuple]] = None) -> dict[str, torch.Tensor]:
    """``path`` -> {name: float32 tensor}; checks the content hash, expected names/shapes, finiteness."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"{what} weights not found", path, FIX)
    try:
        with safe_open(p, framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(p)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise InputError(f"unreadable {what} weights ({type(err).__name__}: {err})", path, FIX) from None
    want = meta.get("sha256")
    if want is None or content_hash(tensors) != want:
        raise InputError(f"{what} weights are damaged (content hash does not match its metadata)", path, FIX)
    if shapes is not None:
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        need = {k: tuple(s) for k, s in shapes.items()}
        if got != need:
            bad = sorted(set(got) ^ set(need)) or sorted(k for k in need if got[k] != need[k])
            raise InputError(f"{what} weights do not match the architecture (e.g. {bad[:3]})", path, FIX)
    if not torch.isfinite(torch.cat([v.flatten().float() for v in tensors.values()])).all():  # one op
        raise InputError(f"{what} weights contain NaN/inf", path, FIX)
    return {k: v.float() for k, v in tensors.items()}
