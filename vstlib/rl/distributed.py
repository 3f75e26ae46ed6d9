"""Data-parallel training over clips with ``torch.distributed``: set-up, sharding and rank-0 writes.

    torchrun --nproc_per_node 2 -m vstlib.cli train ...     # WORLD_SIZE=2: each rank visits other clips

``train`` runs every rank through the same loop. Visits (epoch, position, clip) go in rounds of
W = world size, one per rank (the last round may leave ranks without a visit). Ranks with fewer
chunks in a round join its remaining updates with no chunk, so every rank takes the same number of
Adam steps. One update is the single-process update on the union of the ranks' chunks: each
rank's gradient (of its mean over its n_r transitions) is weighted n_r / sum n and summed across
ranks (the gradient of the mean over the union); clipping, the skip decision (any rank's
non-finite reward or frame skips the step everywhere) and Adam then act on identical gradients, so
the weights stay identical on every rank without broadcasts. Dual ascent sees the union's terms.
Each visit samples from its own seed (seed, epoch, position) under W > 1, so a resumed run and
every rank draw what an uninterrupted run draws. Checkpoints, the log and the policy are written by
rank 0 alone while the others wait at a barrier. Without torchrun (W = 1) every call here is the
identity: a single-process run is bit-identical to one without this module.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from itertools import islice
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist


class Ranks:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    @property
    def main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ sharding
    def shard(self, visits: Iterator[tuple]) -> Iterator[tuple]:
        """(epoch, pos, clip id or None, the round's last (epoch, pos)) of this rank's visit in each
        round of W consecutive visits; the round's last visit is where a checkpoint resumes from."""
        visits = iter(visits)
        while rnd := list(islice(visits, self.world)):
            mine = rnd[self.rank] if self.rank < len(rnd) else (*rnd[-1][:2], None)
            yield (*mine, rnd[-1][:2])

    def chunks(self, n_steps: int, accumulation: int, device) -> list:
        """This rank's chunks of ``accumulation`` transitions, padded with None to the round's most."""
        own = list(torch.arange(n_steps, device=device).split(accumulation)) if n_steps else []
        return own + [None] * (self._max(len(own)) - len(own))

    def seed(self, seed: int, epoch: int, pos: int) -> None:
        """W > 1: sample the visit from its own stream (ranks differ; a resumed run draws the same)."""
        if self.world > 1:
            torch.manual_seed(visit_seed(seed, epoch, pos))

    # ------------------------------------------------------------------ reductions (identity when W = 1)
    def reason(self, reason: Optional[str]) -> Optional[str]:
        """The first rank's reason to skip an update, on every rank (all skip, or none)."""
        if self.world == 1:
            return reason
        out = [None] * self.world
        dist.all_gather_object(out, reason)
        return next((r for r in out if r is not None), None)

    def average_gradients(self, params: list, n: int) -> None:
        """Replace each gradient by the union's: sum_r n_r g_r / sum_r n_r (this rank's gradient is of
        its mean over ``n`` transitions; 0 with no chunk). A parameter no rank has a gradient for keeps
        None (Adam skips it, as in a single process)."""
        if self.world == 1:
            return
        ref = params[0]
        has = torch.tensor([p.grad is not None for p in params] + [n], dtype=torch.float64, device=ref.device)
        dist.all_reduce(has)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() * n for p in params])
        dist.all_reduce(flat)
        total = has[-1]
        for p, g, used in zip(params, flat.split([p.numel() for p in params]), has[:-1]):
            p.grad = (g / total).view_as(p).to(p.dtype) if used > 0 else None

    def union(self, *dicts: dict) -> tuple:
        """Each dict of (n_r,) tensors concatenated over the ranks in rank order: the union's (a rank
        without a chunk passes empty dicts)."""
        if self.world == 1:
            return dicts
        out = [None] * self.world
        dist.all_gather_object(out, [{k: v.detach().cpu() for k, v in d.items()} for d in dicts])
        out = [o for o in out if o and o[0]]
        return tuple({k: torch.cat([o[i][k] for o in out]).to(_device()) for k in out[0][i]} for i in range(len(dicts)))

    def _max(self, n: int) -> int:
        if self.world == 1:
            return n
        t = torch.tensor([n], device=_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    # ------------------------------------------------------------------ rank-0 writes
    def main_only(self, cm):
        """The context manager ``cm`` (e.g. the run lock) on rank 0, nothing on the others."""
        return cm if self.main else nullcontext()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it writes), the others after it (they read what it wrote)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def write(self, fn, *args, **kwargs) -> None:
        """``fn(*args, **kwargs)`` on rank 0 alone (a checkpoint, the policy); the others wait for it."""
        if self.main:
            fn(*args, **kwargs)
        self.barrier()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def visit_seed(seed: int, epoch: int, pos: int) -> int:
    """The torch seed of visit (epoch, pos) under data parallelism."""
    return int(np.random.SeedSequence([seed, epoch, pos]).generate_state(1, np.uint64)[0])


def _device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextmanager
def ranks(device) -> Iterator[Ranks]:
    """This process's ``Ranks``: torchrun's (WORLD_SIZE > 1: the process group is started here, gloo on
    CPU, nccl on CUDA with one GPU per LOCAL_RANK, and ended on exit) or rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Ranks()
        return
    started = not dist.is_initialized()
    if started:
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size())
    finally:
        if started:
            dist.destroy_process_group()


__all__ = ["Ranks", "ranks", "visit_seed"]
