"""Seeding, devices and progress bars."""
from __future__ import annotations

import os
import random
import sys
from typing import Iterable, Optional

import numpy as np


# --------------------------------------------------------------------------- seeding, devices
def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name="auto"):
    """``"auto"`` -> cuda if available, else cpu. Called once, at the entry points."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fork_rng(device=None):
    """``torch.random.fork_rng`` over the CPU and (if any) the CUDA device of ``device``.

    Seeded builds (random smoke networks) run inside it: the caller's RNG stream is untouched.
    """
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [])


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


# --------------------------------------------------------------------------- progress
def progress_enabled() -> bool:
    """tqdm bars on, except under nbval / papermill / ``VSTLIB_PROGRESS=0``.

    Notebook regression tests compare outputs; bars would add stderr noise.
    """
    flag = os.environ.get("VSTLIB_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    if "ipykernel" in sys.modules or "nbval" in sys.modules:
        return False
    return True


def progress(iterable: Iterable, desc: str = "", total: Optional[int] = None, **kw):
    from tqdm import (
        tqdm,  # not tqdm.auto: its notebook flavour warns without ipywidgets
    )

    return tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(), leave=False,
                dynamic_ncols=True, **kw)
