"""Concurrent writers: two processes race on one cache key and on one run folder (both start before
either writes). One wins; nothing is corrupt; the loser holds the winner's entry or a clean refusal."""
import multiprocessing as mp
import os
import time

import torch

from vstlib import cache
from vstlib.errors import VstError
from vstlib.rl.checkpoint import RunLocked, run_lock

BIG = 1 << 20                                       # 4 MB


def _entry(rank: int) -> dict:
    """What a build returns: the same content in every process (one key, one input), built slowly."""
    return {"a": torch.arange(BIG, dtype=torch.float32), "b": torch.full((3,), 7.0)}


def _racer(rank: int, folder: str, barrier, results) -> None:
    from pathlib import Path

    torch.set_num_threads(1)
    out = {"builds": 0}

    def build():                                    # both processes are past the "is it cached?" check
        barrier.wait(timeout=60)
        out["builds"] += 1
        return _entry(rank)

    def replace_together(src, dst):                 # both temporary files are whole before either is renamed
        barrier.wait(timeout=60)
        replace(src, dst)

    replace, os.replace = os.replace, replace_together
    got = cache.cached_tensors(Path(folder) / "cache" / "k.safetensors", build, "toy", expect=("a", "b"))
    os.replace = replace
    out["cache_ok"] = all(torch.equal(got[k], v) for k, v in _entry(rank).items())
    # the run folder: both try the lock at once; the winner holds it until the loser has been refused
    run = Path(folder) / "run"
    run.mkdir(exist_ok=True)
    barrier.wait(timeout=60)
    try:
        with run_lock(run):
            out["lock"] = "won"
            barrier.wait(timeout=60)
    except RunLocked as err:
        out["lock"], out["refusal"] = "refused", str(err)
        barrier.wait(timeout=60)
    except VstError as err:                         # any other refusal would fail the test below
        out["lock"] = f"other: {err}"
    results[rank] = out


def test_two_processes_race_on_one_cache_key_and_one_run_folder(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, manager = ctx.Barrier(2), ctx.Manager()
    results = manager.dict()
    procs = [ctx.Process(target=_racer, args=(r, str(tmp_path), barrier, results)) for r in range(2)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0], f"a racer crashed ({time.time() - t0:.0f} s)"
    res = dict(results)
    # the cache: both built (neither saw a file), the file left is whole and valid, no temporary file
    assert [res[r]["builds"] for r in range(2)] == [1, 1]
    assert all(res[r]["cache_ok"] for r in range(2))
    entry = cache.read_tensors(tmp_path / "cache" / "k.safetensors", expect=("a", "b"))
    assert all(torch.equal(entry[k], v) for k, v in _entry(0).items())
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["k.safetensors"]
    # the run folder: exactly one holder; the other refused with one line naming the folder and the fix
    assert sorted(res[r]["lock"] for r in range(2)) == ["refused", "won"]
    refusal = next(res[r]["refusal"] for r in range(2) if res[r]["lock"] == "refused")
    assert refusal.startswith(f"{tmp_path / 'run'}: run folder is in use by ") and "Fix: " in refusal
    assert "\n" not in refusal
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
