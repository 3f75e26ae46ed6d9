"""Run independent jobs in-process or on Ray: one function, the results in job order.

    results = run_jobs("sequential", fn, jobs, desc="learners")   # or "ray" (``compare.executor``)

A job must not depend on another job's result or on state the caller built in-process: each one
seeds itself (training runs) or builds what it needs (evaluation units), so that where it runs never
changes a number. ``ray`` sends each job as one Ray task (one CPU slot each, or one GPU each when
the cluster has GPUs) to the cluster ``ray.init()`` finds (``RAY_ADDRESS``, or a local one started
here). Each task carries the driver's ``VSTLIB_*`` settings and a ``PYTHONPATH`` to this checkout:
the workers run this code and read and write the same ``VSTLIB_HOME`` (on a multi-machine cluster,
a shared filesystem). Ray is imported only here, when used.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

from vstlib import paths
from vstlib.errors import VstError
from vstlib.registry import Registry
from vstlib.runtime import progress

EXECUTORS = Registry("executor", "compare.executor")

# what the numbers depend on beyond the code: the project's settings and the CPU kernels' caps
# (Makefile KERNEL_CAPS), forwarded so that a worker computes what the driver would
FORWARDED_ENV = ("VSTLIB_", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
                 "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "CUBLAS_WORKSPACE_CONFIG")


def run_jobs(executor: str, fn: Callable, jobs: Sequence, desc: str = "") -> list:
    """``[fn(job) for job in jobs]`` on the executor named ``executor``; an unknown name is one line."""
    return EXECUTORS.pick(executor)(fn, list(jobs), desc)


@EXECUTORS.register("sequential")
def sequential(fn: Callable, jobs: list, desc: str = "") -> list:
    """In this process, one job after the other (the default)."""
    return [fn(job) for job in progress(jobs, desc=desc)]


@EXECUTORS.register("ray")
def ray_tasks(fn: Callable, jobs: list, desc: str = "") -> list:
    """One Ray task per job; a job's user error (a VstError) comes back as itself (one line in the CLI)."""
    ray = _ray()
    if not jobs:
        return []
    gpus = ray.cluster_resources().get("GPU", 0)
    # the environment goes with each task, not with ray.init: it holds whoever started Ray (a test, a notebook)
    pythonpath = os.pathsep.join(p for p in (str(paths.PACKAGE.parent), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    env["VSTLIB_PROGRESS"] = "0"                   # workers' bars would interleave: the driver's counts the jobs
    task = ray.remote(fn).options(num_cpus=1, num_gpus=1 if gpus > 0 else 0, max_retries=0,
                                  runtime_env={"env_vars": {**env, "PYTHONPATH": pythonpath}})
    refs = [task.remote(job) for job in jobs]
    out = []
    try:
        for ref in progress(refs, desc=desc):                              # in job order (they run at once)
            out.append(ray.get(ref))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, VstError):
            raise err.cause from None
        raise
    return out


def _ray():
    """The ``ray`` module, connected (``ray.init`` once per process: a cluster at ``RAY_ADDRESS`` or a
    local one); without Ray installed, one line naming the extra."""
    try:
        import ray
    except ImportError:
        raise VstError("the ray executor needs Ray, which is not installed",
                       fix="pip install -e .[scale] (or run with --executor sequential)") from None
    if not ray.is_initialized():                                       # start-up notices stay quiet
        ray.init(include_dashboard=False, logging_level=logging.ERROR)
    return ray


__all__ = ["EXECUTORS", "run_jobs", "sequential", "ray_tasks"]
