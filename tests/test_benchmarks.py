"""Every script in benchmarks/ runs on tiny inputs, so a change that breaks one fails here (they rot
silently otherwise). Only that they run and print what they promise is checked, never a time."""
import json
import os
import subprocess
import sys

import pytest

from vstlib import paths

BENCH = paths.ROOT / "benchmarks"
TINY = {
    "stylize.py": ["--profile", "smoke", "--frames", "4", "7", "--chunk", "3", "--threads", "1"],
    "evalmetrics.py": ["--frames", "6", "--size", "64", "--threads", "1"],
    "backbone.py": ["--profile", "smoke", "--frames", "2", "--threads", "1"],
    "paper_estimate.py": [],
    "gradient_snr.py": ["--profile", "smoke", "--samples", "1", "--seeds", "1", "--clips", "1", "--exact", "1"],
}
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

    if script == "stylize.py":                                            # the JSON record, per length
        rec = json.loads((tmp_path / "results" / "smoke" / "bench" / "stylize.json").read_text())
        assert [r["frames"] for r in rec["runs"]] == [4, 7]
        for r in rec["runs"]:
            assert r["per_frame"]["frames"] == r["consistent"]["frames"] == r["frames"]
            assert "stylize N" in r["per_frame"]["s_per_frame"] and "policy step" in r["consistent"]["s_per_frame"]
            assert "policy step" not in r["per_frame"]["s_per_frame"]          # no policy: N(I_t) only
            assert r["ratio"] == pytest.approx(r["per_frame"]["frames_per_s"] / r["consistent"]["frames_per_s"])
            assert r["consistent"]["peak_rss_mb"] > 0
