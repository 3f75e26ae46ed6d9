"""One command for the whole paper: run the numbered notebooks in order with papermill.

    vst reproduce --profile cpu        # or: make reproduce [PROFILE=smoke|paper]
    vst reproduce --profile paper --set backbone.num_inference_steps=5 --set train.epochs=1
    make reproduce PROFILE=paper SET="backbone.num_inference_steps=5 train.epochs=1"

Every notebook gets two papermill parameters: ``profile`` and ``overrides`` (a list of
``section.field=value`` strings); its first cell resolves the config from them once
(``report.start``), which records them in ``results/<profile>/run_config.json``.
Executed copies go to ``results/<profile>/notebooks/``; the notebooks write ``figures/`` and
``paper/tables/`` themselves (through ``vstlib.paths``). A failure names the notebook and the cell.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from . import paths
from .config import DEFAULT_PROFILE
from .utils import VstError, atomic_path, progress_enabled


def notebooks() -> list[Path]:
    """The numbered notebooks, in the order they must run."""
    found = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise VstError("no numbered notebooks found", paths.NOTEBOOKS)
    return found


def store_outputs_in_source(executed: Path, source: Path) -> None:
    """Copy the outputs of an executed copy back into the committed notebook.

    The committed notebooks carry the outputs of a smoke run: JupyterLab opens them with
    results, and ``pytest --nbval`` compares a fresh run against them. Cells are matched by id
    (papermill keeps ids and adds its injected-parameters cell, which is skipped). What varies
    between equal runs is dropped, so a re-run with equal results leaves a clean ``git diff``:
    timing metadata (cell and notebook), and where the kernel happened to split a stream
    (consecutive stdout/stderr chunks are merged).
    """
    import nbformat

    done = {c.get("id"): c for c in nbformat.read(executed, as_version=4).cells}
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.get("id") not in done:
            continue
        cell.outputs = merge_streams(done[cell["id"]].get("outputs", []))
        cell.execution_count = done[cell["id"]].get("execution_count")
        for key in ("execution", "papermill"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("papermill", None)
    with atomic_path(source) as tmp:
        nbformat.write(nb, str(tmp))


def merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same name as one: the kernel flushes stdout in
    timing-dependent chunks, which would otherwise change the stored notebook run to run."""
    merged = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None
                and prev.get("output_type") == "stream" and prev.get("name") == out.get("name")):
            prev["text"] = "".join(prev["text"]) + "".join(out["text"])
        else:
            merged.append(out)
    return merged


def _kernel_config() -> dict:
    """Encrypt the kernel's local TCP link where jupyter_client and pyzmq can (CurveZMQ).

    ipykernel >= 7.3 prints a warning about plain-text TCP at every kernel start; with six
    notebooks that is six lines of noise in the reproduction log.
    """
    try:
        import zmq
        from jupyter_client.manager import KernelManager
        from traitlets.config import Config
    except ImportError:
        return {}
    if not (zmq.has("curve") and KernelManager.class_traits().get("transport_encryption")):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


# glibc hands every large buffer (a conv activation at 256 px is tens of MB) back to the OS when it
# is freed and faults it in again, zeroed, on the next call: 78 M page faults and ~7 % of the CPU
# time of a cpu-profile reproduction. These two tunables keep freed buffers in the heap (measured:
# 18x fewer page faults, 10x less system time); other C libraries ignore them.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def tune_kernel_malloc() -> None:
    """Set ``MALLOC_TUNING`` for the notebook kernels we start (they inherit our environment;
    the C library reads it at process start). A value the user set stays."""
    for key, value in MALLOC_TUNING.items():
        os.environ.setdefault(key, value)


def parameters(profile: str = DEFAULT_PROFILE, overrides: Sequence[str] = ()) -> dict:
    """The papermill parameters every notebook receives (its parameters cell names both)."""
    return {"profile": profile, "overrides": list(overrides)}


def run(profile: str = DEFAULT_PROFILE, only: list[str] | None = None, overrides: Sequence[str] = (),
        store_outputs: bool | None = None) -> dict:
    """Execute every notebook (or those whose name starts with one of ``only``); return timings.

    ``overrides``: ``section.field=value`` strings passed to every notebook. ``store_outputs``
    (default: on for the default profile, config.DEFAULT_PROFILE, without overrides) refreshes the outputs stored in
    ``notebooks/*.ipynb``, which nbval compares against.
    """
    store_outputs = (profile == DEFAULT_PROFILE and not overrides) if store_outputs is None else store_outputs
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir = paths.ensure(paths.results_dir(profile) / "notebooks")
    tune_kernel_malloc()
    params = parameters(profile, overrides)
    config = _kernel_config()
    timings = {}
    for nb in notebooks():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        t0 = time.perf_counter()
        print(f"[reproduce:{profile}] {nb.name} ...", flush=True)
        try:
            pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, kernel_name="python3",
                                cwd=str(paths.NOTEBOOKS), progress_bar=progress_enabled(),
                                log_output=False, report_mode=False, **config)
        except PapermillExecutionError as err:
            raise _cell_error(err, out_dir / nb.name, profile) from None
        if store_outputs:
            store_outputs_in_source(out_dir / nb.name, nb)
        timings[nb.name] = time.perf_counter() - t0
        print(f"[reproduce:{profile}] {nb.name} done in {timings[nb.name]:.1f} s", flush=True)
    total = sum(timings.values())
    print(f"[reproduce:{profile}] all notebooks done in {total:.1f} s")
    print(f"  figures: {sorted(p.name for p in paths.FIGURES.glob('*.png'))}")
    print(f"  tables:  {sorted(p.name for p in paths.TABLES.glob('*.tex'))}")
    return timings


def _cell_error(err, executed: Path, profile: str) -> VstError:
    """One line: the notebook and cell, the error, and ONE fix (the error's own when it has one:
    a missing style image says where to put it; otherwise how to inspect and rerun the cell)."""
    evalue = " ".join(str(err.evalue).split())
    msg = f"cell {err.exec_count} failed with {err.ename}: {evalue}"
    if "Fix: " in evalue:                                    # a VstError from the library: its fix stands
        return VstError(msg, executed)
    return VstError(msg, executed, f"open the executed copy in JupyterLab to see the cell; rerun with "
                                   f"`vst reproduce --profile {profile} --only {executed.name[:2]}`")


def main(profile: str = DEFAULT_PROFILE, only: list[str] | None = None, overrides: Sequence[str] = ()) -> int:
    run(profile, only, overrides)
    return 0


if __name__ == "__main__":  # python -m vstlib.reproduce --profile cpu
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    try:
        sys.exit(main(a.profile, a.only, a.set))
    except VstError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
