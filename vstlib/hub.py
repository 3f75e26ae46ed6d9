"""Pretrained weights that are downloaded once: one clear error when they are missing offline."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional

from vstlib.errors import MissingWeightsError, VstError
from vstlib.runtime import progress_enabled


# --------------------------------------------------------------------------- weights
def hf_offline_hint(model_ids: Iterable[str]) -> str:
    # one command per repository: `hf download A B` would read B as a file of A
    cmds = " and ".join(f"`hf download {i}`" for i in model_ids) or "the weights"
    return (f"download once with network: {cmds} (cached under "
            f"$HF_HOME, default ~/.cache/huggingface), or run `vst download-weights`; "
            f"or use the smoke profile")


@contextmanager
def weights_guard(what: str, model_ids: Iterable[str] = (), fix: Optional[str] = None):
    """Turn a failed weight download/load into one MissingWeightsError.

    Wrap every pretrained load: offline, hub and torch.hub raise a zoo of exceptions
    (OSError, URLError, LocalEntryNotFoundError, ...) after long retries; the user needs
    one sentence saying what to download and where.
    """
    try:
        yield
    except MissingWeightsError:
        raise
    except (OSError, ConnectionError, RuntimeError, ValueError) as err:  # noqa: PERF203
        text = str(err).lower()
        netty = any(k in text for k in ("connect", "offline", "resolve", "download", "internet",
                                        "not found", "no such file", "urlopen", "network",
                                        "couldn't", "cannot find", "does not appear", "local"))
        if isinstance(err, (OSError, ConnectionError)) or netty:
            raise MissingWeightsError(
                f"pretrained weights for {what} are not available offline ({type(err).__name__})",
                fix=fix or hf_offline_hint(model_ids)) from None
        raise


def torch_hub_checkpoint(filename: str) -> Path:
    """Where torchvision caches a weight file (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_torchvision_weights(weights, what: str):
    """``weights.get_state_dict`` with an offline check: one clear error instead of a traceback."""
    fname = Path(weights.url).name
    cached = torch_hub_checkpoint(fname)
    fix = (f"download {weights.url} to {cached} (e.g. `vst download-weights` with network, "
           f"or copy the file there); or use the smoke profile")
    if not cached.exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise MissingWeightsError(f"{what} weights {fname} are not cached", cached, fix)
    was_cached = cached.exists()
    try:
        with weights_guard(what, fix=fix):
            return weights.get_state_dict(progress=progress_enabled(), check_hash=False)
    except (RuntimeError, EOFError, ValueError, MissingWeightsError) as err:
        if not was_cached:
            raise
        # a truncated or damaged cached file: torch.load's PytorchStreamReader / unpickling error
        raise VstError(f"cached {what} weights {fname} are damaged or truncated "
                       f"({type(err).__name__}: {' '.join(str(err).split())[:120]})", cached,
                       f"delete {cached} and download it again (`vst download-weights`, or copy the file "
                       f"from {weights.url})") from None


# --------------------------------------------------------------------------- stand-in weights
MARKER = "STAND-IN-WEIGHTS.txt"   # a folder of random weights in the real layouts (vstlib.tools.standin)


def weights_are_standin() -> bool:
    """True when the Hugging Face or torch cache in use lies in a stand-in folder (tables mark it)."""
    roots = [os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME")]
    return any(is_standin(r) for r in roots if r)


def is_standin(path: os.PathLike) -> bool:
    """True when ``path`` lies inside a stand-in folder (a parent holds the marker)."""
    p = Path(path).resolve()
    return any((q / MARKER).exists() for q in (p, *p.parents))
