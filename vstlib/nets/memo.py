"""The features of a frozen network for the last few inputs, so that the same frames pass through it
once: the reward's style and content terms share one pass over the stylized frames, and a reference
(the input frames, or N(I_t) for the judge) shared by many scored rows is encoded once."""
from __future__ import annotations

from typing import Callable

import torch


class RecentInputs:
    """``get(x, layers, compute)``: ``compute(x, layers)`` (a dict of feature maps), or the stored result
    for the same tensor (same storage, offset, shape, strides and version: its values cannot have
    changed) asked in the same grad mode, when it holds every layer asked. The stored inputs are kept
    alive, so their storage cannot be reused by another tensor while they are remembered."""

    def __init__(self, size: int = 2):
        self.size, self.items = size, []                         # [(key, x, {layer: features})]

    @staticmethod
    def key(x: torch.Tensor) -> tuple:
        return (x.data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(), x._version, x.dtype, x.device,
                torch.is_grad_enabled())

    def get(self, x: torch.Tensor, layers: tuple, compute: Callable) -> dict:
        k = self.key(x)
        for i, (key, _, feats) in enumerate(self.items):
            if key == k and set(layers) <= set(feats):
                self.items.append(self.items.pop(i))             # least recently USED goes first: the
                return feats                                     # references asked by every row stay
        feats = compute(x, layers)
        rest = [item for item in self.items if item[0] != k]
        self.items = (rest[-(self.size - 1):] if self.size > 1 else []) + [(k, x, feats)]
        return feats

    def clear(self) -> None:
        self.items = []


__all__ = ["RecentInputs"]
