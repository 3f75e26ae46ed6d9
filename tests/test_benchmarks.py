"""Every script in benchmarks/ runs on tiny inputs, so a change that breaks one fails here (they rot
silently otherwise). Only that they run, print what they promise and write a well-formed JSON record
(vstlib.bench) is checked, never a time."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vstlib import paths

BENCH = paths.ROOT / "benchmarks"
TINY = {
    "stylize.py": ["--profile", "smoke", "--frames", "4", "7", "--chunk", "3", "--threads", "1"],
    "evalmetrics.py": ["--frames", "6", "--size", "64", "--threads", "1", "--profile", "smoke"],
    "backbone.py": ["--profile", "smoke", "--frames", "2", "--threads", "1"],
    "paper_estimate.py": ["--mfu", "0.3"],
    "gradient_snr.py": ["--profile", "smoke", "--samples", "1", "--seeds", "1", "--clips", "1", "--exact", "1",
                       "--threads", "1"],
}
RECORD_PROFILE = {"paper_estimate.py": "paper"}                          # it estimates the paper preset
PRINTS = {"stylize.py": "consistent / per-frame cost", "evalmetrics.py": "CG on frame 1",
          "backbone.py": "speed-up batched", "paper_estimate.py": "total compute", "gradient_snr.py": "| reinforce | 1 |"}


def test_every_benchmark_has_a_tiny_run():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_on_tiny_inputs(script, tmp_path):
    env = {**os.environ, "VSTLIB_HOME": str(tmp_path), "VSTLIB_PROGRESS": "0", "PYTHONPATH": str(paths.ROOT)}
    if script == "gradient_snr.py":                                       # reads prepared clips
        subprocess.run([sys.executable, "-m", "vstlib.cli", "prepare", "--profile", "smoke"], env=env,
                       check=True, capture_output=True, timeout=300)
    r = subprocess.run([sys.executable, str(BENCH / script), *TINY[script]], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert PRINTS[script] in r.stdout

    profile = RECORD_PROFILE.get(script, "smoke")
    rec = json.loads((tmp_path / "results" / profile / "bench" / script.replace(".py", ".json")).read_text())
    check_record(rec, script, profile)
    assert rec["command"] in performance_table().table(rec)              # the doc's generator reads it
    if script == "stylize.py":                                            # two paths per length
        assert [r["length"] for r in rec["runs"]] == [4, 4, 7, 7]
        for base, cons in zip(rec["runs"][::2], rec["runs"][1::2]):
            assert base["items"] == cons["items"] == base["length"]
            assert "stylize N" in base["s_per_item"] and "policy step" in cons["s_per_item"]
            assert "policy step" not in base["s_per_item"]                # no policy: N(I_t) only
            assert cons["ratio"] == pytest.approx(base["items_per_s"] / cons["items_per_s"])
    elif script == "backbone.py":
        assert [r["label"].rsplit(": ", 1)[1] for r in rec["runs"]] == ["batched", "one at a time"]
        assert all(set(r["s_per_item"]) == {"invert", "denoise", "decode"} for r in rec["runs"])
    elif script == "paper_estimate.py":
        assert {"unet @ 32", "raft_large @ 256"} <= set(rec["gflop_per_image"])
        assert all(e["total_s"] > 0 and e["items"] for e in rec["estimates"])
        assert rec["tflop_per_s_assumed"] == pytest.approx(0.3 * rec["settings"]["peak"] / 1e12)
    elif script == "gradient_snr.py":
        assert [(r["learner"], r["samples"]) for r in rec["runs"]] == [("reinforce", 1)]
        assert -1 <= rec["runs"][0]["cosine_mean"] <= 1


def performance_table():
    """scripts/performance_table.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("performance_table", paths.ROOT / "scripts" / "performance_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parsed(argv: list[str]) -> dict:
    """``--flag v [v ...]`` pairs as {"flag": [v, ...]}, the way argparse stores them (dashes to _)."""
    out, key = {}, None
    for a in argv:
        if a.startswith("--"):
            key = a[2:].replace("-", "_")
            out[key] = []
        else:
            out[key].append(a)
    return out


def check_record(rec: dict, script: str, profile: str):
    """The keys every record has (vstlib.bench.record), positive figures, the settings it ran with."""
    assert {"benchmark", "command", "profile", "settings", "date", "machine", "torch", "peak_rss_mb",
            "runs"} <= set(rec)
    assert rec["benchmark"] == script[:-3] and rec["profile"] == profile
    assert rec["command"] == " ".join(["python", f"benchmarks/{script}", *TINY[script]])
    assert rec["machine"]["cpu"] and rec["machine"]["threads"] >= 1 and rec["machine"]["load_avg_1min"] >= 0
    assert rec["peak_rss_mb"] > 0
    if rec["settings"].get("threads"):
        assert rec["machine"]["threads"] == rec["settings"]["threads"]
    for key, values in parsed(TINY[script]).items():                     # settings match the arguments
        got = rec["settings"][key]
        assert [str(v) for v in (got if isinstance(got, list) else [got])] == values, key
    assert rec["runs"]
    for r in rec["runs"]:
        assert r["items"] > 0 and r["seconds"] > 0 and r["items_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["s_per_item"] and all(v >= 0 for v in r["s_per_item"].values())   # a stage may round to 0
        assert sum(r["s_per_item"].values()) * r["items"] == pytest.approx(r["seconds"])
