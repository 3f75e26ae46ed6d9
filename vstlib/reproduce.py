"""One command for the whole paper: run the numbered notebooks in order with papermill.

    vst reproduce --profile cpu        # or: make reproduce [PROFILE=smoke|paper]
    vst reproduce --profile paper --set backbone.num_inference_steps=5 --set train.epochs=1
    make reproduce PROFILE=paper SET="backbone.num_inference_steps=5 train.epochs=1"

Every notebook gets two papermill parameters: ``profile`` and ``overrides`` (a list of
``section.field=value`` strings); its first cell resolves the config from them once
(``report.start``), which records them in ``results/<profile>/run_config.json``.
Everything goes under ``results/<profile>/``: executed notebooks, figures, tables, result CSVs.
Nothing committed changes: the run ends by verifying every committed number against its
reproduction within tolerance (``vstlib.verify``; exit status 1 when one is out), and
``vst publish`` copies a reproduction into place when a change is intended. A failure names the
notebook and the cell.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from vstlib import paths
from vstlib.config import DEFAULT_PROFILE
from vstlib.errors import VstError
from vstlib.evaluation.tables import recorded_overrides
from vstlib.files import atomic_path, atomic_write_json
from vstlib.runtime import progress_enabled
from vstlib.verify import PUBLISHED, RESULT_CSVS, verify


def notebooks() -> list[Path]:
    """The numbered notebooks, in the order they must run."""
    found = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise VstError("no numbered notebooks found", paths.NOTEBOOKS)
    return found


VERIFY_CELL = "print(report.verification(cfg))"   # the reproduction's last cell (notebook 06)


def store_outputs_in_source(executed: Path, source: Path, replace: dict | None = None) -> None:
    """Copy the outputs of an executed copy back into the committed notebook.

    The committed notebooks carry the outputs of a default-profile run: JupyterLab opens them with
    results, and ``pytest --nbval`` compares a fresh run against them. Cells are matched by id
    (papermill keeps ids and adds its injected-parameters cell, which is skipped). What varies
    between equal runs is dropped, so a re-run with equal results leaves a clean ``git diff``:
    timing metadata (cell and notebook), and where the kernel happened to split a stream
    (consecutive stdout/stderr chunks are merged). ``replace``: {cell source: stdout text} stored instead
    of what the run printed (the verification cell, whose published output is the published run's own).
    """
    import nbformat

    done = {c.get("id"): c for c in nbformat.read(executed, as_version=4).cells}
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.get("id") not in done:
            continue
        cell.outputs = merge_streams(done[cell["id"]].get("outputs", []))
        if replace and cell.source in replace:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=replace[cell.source])]
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


# PyTorch (ATen), oneDNN and MKL pick SIMD kernels by CPU at run time; their sums then round
# differently and training amplifies it (AVX-512 against AVX2: 4th-5th digit). Capped to AVX2 on
# x86-64, every x86-64 CPU since 2013 runs the same kernels and reproduces bit for bit; the cap costs
# about 7 % of wall time (docs/reproducibility.md). VSTLIB_KERNEL_CAPS=off keeps the fastest kernels
# (numbers then agree within vstlib.verify's tolerance). The Makefile exports the same values.
KERNEL_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
               "MKL_CBWR": "AVX2"}


def cap_kernels() -> dict:
    """Set ``KERNEL_CAPS`` for the notebook kernels we start (read at their torch import), unless
    ``VSTLIB_KERNEL_CAPS=off``, the CPU is not x86-64, or the user set a value; returns what is set."""
    if os.environ.get("VSTLIB_KERNEL_CAPS", "on") == "off" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    for key, value in KERNEL_CAPS.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in KERNEL_CAPS}


def parameters(profile: str = DEFAULT_PROFILE, overrides: Sequence[str] = ()) -> dict:
    """The papermill parameters every notebook receives (its parameters cell names both)."""
    return {"profile": profile, "overrides": list(overrides)}


def run(profile: str = DEFAULT_PROFILE, only: list[str] | None = None, overrides: Sequence[str] = ()) -> dict:
    """Execute every notebook (or those whose name starts with one of ``only``); return timings.

    ``overrides``: ``section.field=value`` strings passed to every notebook.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir = paths.ensure(paths.results_dir(profile) / "notebooks")
    tune_kernel_malloc()
    cap_kernels()
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
        timings[nb.name] = time.perf_counter() - t0
        print(f"[reproduce:{profile}] {nb.name} done in {timings[nb.name]:.1f} s", flush=True)
    total = sum(timings.values())
    print(f"[reproduce:{profile}] all notebooks done in {total:.1f} s")
    print(f"  figures: {sorted(p.name for p in paths.figures_dir(profile).glob('*.png'))}")
    print(f"  tables:  {sorted(p.name for p in paths.tables_dir(profile).glob('*.tex'))}")
    return timings


def publish(profile: str, force: bool = False) -> list[Path]:
    """Copy a finished reproduction into the committed places: figures, tables, result CSVs and
    the notebooks' stored outputs (what ``pytest --nbval`` compares). Returns the written paths."""
    res = paths.results_dir(profile)
    executed = [res / "notebooks" / nb.name for nb in notebooks()]
    missing = [p for p in executed if not p.exists()]
    if missing:
        raise VstError("the reproduction is incomplete (executed notebook missing)", missing[0],
                       f"run `make reproduce PROFILE={profile}` first")
    if recorded_overrides(profile) and not force:
        raise VstError(f"the last reproduction was a reduced run ({' '.join(recorded_overrides(profile))})",
                       paths.run_config_path(profile), "rerun `make reproduce` without SET=, or publish --force")
    written = _mirror(paths.figures_dir(profile), paths.FIGURES, ("*.png", "*.pdf"))
    written += _mirror(paths.tables_dir(profile), paths.TABLES, ("*.tex",))
    paths.ensure(paths.PAPER_RESULTS)
    for name in (*RESULT_CSVS, "summary.md"):                      # summary.md: what the README links (06)
        dst = paths.PAPER_RESULTS / name
        if (res / name).exists():
            with atomic_path(dst) as tmp:
                shutil.copyfile(res / name, tmp)
            written.append(dst)
        else:
            dst.unlink(missing_ok=True)
    written.append(atomic_write_json(paths.PAPER_RESULTS / PUBLISHED, {"profile": profile}))
    line = verify(profile).line()                   # the published run against itself: what a rerun prints
    for nb, done in zip(notebooks(), executed):
        store_outputs_in_source(done, nb, {VERIFY_CELL: line + "\n"})
        written.append(nb)
    return written


def _mirror(src: Path, dst: Path, patterns: tuple) -> list[Path]:
    """Make ``dst``'s files matching ``patterns`` exactly those of ``src`` (copied atomically)."""
    paths.ensure(dst)
    new = {p.name: p for pat in patterns for p in Path(src).glob(pat)}
    for old in (p for pat in patterns for p in dst.glob(pat)):
        if old.name not in new:
            old.unlink()
    out = []
    for name, p in sorted(new.items()):
        with atomic_path(dst / name) as tmp:
            shutil.copyfile(p, tmp)
        out.append(dst / name)
    return out


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
    """Run the notebooks, then verify against the committed results: 0, or 1 when a number is out
    of tolerance (the last line says which)."""
    run(profile, only, overrides)
    report = verify(profile)
    print(report.line(), flush=True)
    return 0 if report.ok else 1


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
