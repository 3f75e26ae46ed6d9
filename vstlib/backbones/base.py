"""PLACEHOLDER for the branch that writes the backbone interface (arch-backbone): only the names
vstlib/backbones/faststyle.py needs, as arch-plan.md specifies them. At merge, take that branch's
base.py over this file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class BaselineOutput:
    images: torch.Tensor                       # (T,3,H,W) the per-frame baseline D(L_t)
    per_frame: Optional[torch.Tensor] = None   # (T,3,H,W) the stylizer's own frames (None: == images)


BACKBONES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        BACKBONES[name] = cls
        return cls
    return deco
