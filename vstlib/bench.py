"""What every script in ``benchmarks/`` records: stage timers, peak memory, the machine, the JSON record.

A record is ``results/<profile>/bench/<name>.json``; ``scripts/performance_table.py`` turns each into a
table of docs/performance.md. Its keys (``record``): ``benchmark``, ``command`` (the line that
produced it), ``profile``, ``settings`` (the parsed arguments), ``date``, ``machine``, ``torch``,
``peak_rss_mb`` and ``runs``, a list of ``run`` dicts: what was counted (``item``, e.g. "frame"),
how many (``items``), the seconds per item of each stage (``s_per_item``), ``items_per_s`` and the
peak resident memory when the run ended, plus what the benchmark adds.
"""
from __future__ import annotations

import os
import platform
import resource
import shlex
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

from vstlib import paths
from vstlib.files import atomic_write_json


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is empty or just "x86_64" on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict:
    """Where the figures were measured: they mean little without it (the load average says whether
    other work shared the CPUs, which on a shared machine moves them more than anything else)."""
    return {"cpu": cpu_model(), "arch": platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0],
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


class Timers:
    """Wall time per stage name: wrap a callable (``wrap``) or time a block (``with timers.stage(name):``)."""

    def __init__(self):
        self.s = defaultdict(float)

    def wrap(self, name, fn):
        def timed(*a, **kw):
            with self.stage(name):
                return fn(*a, **kw)
        return timed

    @contextmanager
    def stage(self, name):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.s[name] += time.perf_counter() - t0


def run(label: str, item: str, items: int, stages: dict, **extra) -> dict:
    """One timed run: ``stages`` maps a stage to its seconds over all ``items``."""
    seconds = sum(stages.values())
    return {"label": label, "item": item, "items": items, "seconds": seconds,
            "s_per_item": {k: v / items for k, v in stages.items()}, "items_per_s": items / seconds,
            "peak_rss_mb": peak_rss_mb(), **extra}


def record(name: str, profile: str, args, argv, runs: list, **extra) -> dict:
    """The record of one invocation; ``argv`` None means the command line (``main(argv)`` convention)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return {"benchmark": name, "command": shlex.join(["python", f"benchmarks/{name}.py", *argv]),
            "profile": profile, "settings": dict(vars(args)),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "torch": torch.__version__, "peak_rss_mb": peak_rss_mb(), "runs": runs, **extra}


def record_path(profile: str, name: str) -> Path:
    return paths.results_dir(profile) / "bench" / f"{name}.json"


def write_record(rec: dict) -> Path:
    """Atomically (a killed run leaves the previous record, never half of one), stages in the order
    they ran (the tables read them in that order); prints where."""
    out = atomic_write_json(record_path(rec["profile"], rec["benchmark"]), rec, sort_keys=False)
    print(f"wrote {out}")
    return out
