"""`vst reproduce` / `make reproduce`: overrides reach every notebook and are recorded; the stored
notebooks carry nothing that changes between two equal runs; a failing cell gives one line."""
import json
import re
import subprocess

import nbformat
import pytest

from vstlib import paths, report, reproduce
from vstlib.cli import main
from vstlib.config import ablations, get_config, load
from vstlib.evaluation import tables

REDUCED = ["backbone.num_inference_steps=5", "train.epochs=1"]


@pytest.fixture
def calls(monkeypatch):
    """Record what papermill would run (notebook, parameters) instead of running it."""
    import papermill

    seen = []

    def fake(input_path, output_path, parameters=None, **kw):
        seen.append((input_path, dict(parameters)))
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return seen


def test_every_notebook_gets_profile_and_overrides(home, calls):
    reproduce.run("paper", overrides=REDUCED)
    assert [p.rsplit("/", 1)[-1][:2] for p, _ in calls] == ["01", "02", "03", "04", "05", "06"]
    assert all(params == {"profile": "paper", "overrides": REDUCED} for _, params in calls)


def test_cli_reproduce_passes_set_videos_and_style(home, calls, monkeypatch):
    (home / "vids").mkdir()
    (home / "s.png").write_bytes(b"\x89PNG fake")           # existence is checked here; content by prepare
    monkeypatch.chdir(home)                                   # relative paths become absolute
    assert main(["reproduce", "--profile", "paper", "--only", "01", "--videos", "vids", "--style", "s.png",
                 "--set", "train.epochs=1"]) == 0
    assert len(calls) == 1 and calls[0][0].endswith("01_data_prep.ipynb")
    assert calls[0][1]["overrides"] == ["train.epochs=1", f"data.source={(home / 'vids').resolve()}",
                                        f"data.style={(home / 's.png').resolve()}"]
    cfg = load("paper", calls[0][1]["overrides"])            # what notebook 01's report.start resolves
    assert cfg.data.source == str((home / "vids").resolve()) and cfg.train.epochs == 1


def test_cli_reproduce_rejects_bad_set_before_any_notebook(home, calls, capsys):
    assert main(["reproduce", "--set", "train.no_such_field=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_field" in err[0] and calls == []
    assert main(["reproduce", "--style", str(home / "missing.jpg")]) == 2
    assert str(home / "missing.jpg") in capsys.readouterr().err and calls == []


def test_makefile_passes_set_through():
    r = subprocess.run(["make", "-n", "-s", "reproduce", "STAMP=", "PY=py", "PROFILE=paper",
                        f"SET={' '.join(REDUCED)}"], cwd=paths.ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ("py -m vstlib.cli reproduce --profile paper --set backbone.num_inference_steps=5 "
            "--set train.epochs=1") in r.stdout


def test_missing_style_failure_ends_with_one_fix(home):
    """The error a notebook cell raises for a missing style image, as `vst reproduce` reports it."""
    from papermill.exceptions import PapermillExecutionError

    from vstlib.errors import VstError
    from vstlib.video.prepare import prepare

    missing = home / "home" / "starry_night.jpg"
    with pytest.raises(VstError) as info:
        prepare(get_config("smoke").override(data={"style": str(missing)}))
    err = PapermillExecutionError(3, 4, "", type(info.value).__name__, str(info.value), [])
    line = str(reproduce._cell_error(err, home / "01_data_prep.ipynb", "paper"))
    assert line.count("Fix:") == 1 and str(missing) in line
    assert line.endswith(info.value.fix)                      # the library's own fix, once
    plain = PapermillExecutionError(3, 4, "", "ZeroDivisionError", "division by zero", [])
    line = str(reproduce._cell_error(plain, home / "04_ablations.ipynb", "paper"))
    assert line.count("Fix:") == 1 and "--only 04" in line


def test_ablation_epochs_follow_the_overridden_epochs():
    def epochs(cfg):
        return sorted({c.train.epochs for c in ablations(cfg)["lr_epochs"].values()})
    assert epochs(get_config("paper")) == [2, 5, 10]          # the paper's grid
    assert epochs(get_config("smoke")) == [1, 2, 4]
    assert epochs(load("paper", ["train.epochs=1"])) == [1]
    assert epochs(load("paper", ["train.epochs=20"])) == [4, 10, 20]


def test_reduced_run_is_recorded_and_marked(home, capsys, monkeypatch):
    cfg = report.start("paper", REDUCED)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "profile: paper" and "reduced run: " + " ".join(REDUCED) in out
    rec = json.loads(paths.run_config_path("paper").read_text())
    assert rec["overrides"] == REDUCED and rec["config"]["train"]["epochs"] == 1 == cfg.train.epochs
    tex = tables.latex_table([{"method": "a", "split": "test", "x": 1.0}], ["method", "split", "x"], "cap", "t", "paper")
    assert r"reduced run: backbone.num\_inference\_steps=5 train.epochs=1" in tex
    assert tables.marked("paper") and tables.write_numbers({}, "paper").read_text().count("reduced run") == 2
    report.start("paper", [])                                 # the full run clears the mark
    assert tables.marked("paper") is None
    assert "reduced" not in tables.latex_table([{"method": "a", "split": "t", "x": 1.0}],
                                               ["method", "split", "x"], "cap", "t", "paper")
    assert capsys.readouterr().out == "profile: paper\n"


def _executed_like(source, tmp_path):
    """An executed copy as papermill writes it: timings in cell and notebook metadata, an injected
    parameters cell, and one print split over two stream chunks."""
    nb = nbformat.read(source, as_version=4)
    stamp = {"start_time": "2026-01-01T00:00:00", "end_time": "2026-01-01T00:00:01", "duration": 1.0,
             "status": "completed", "exception": False}
    for i, cell in enumerate(nb.cells):
        cell.metadata["papermill"] = dict(stamp)
        if cell.cell_type == "code":
            cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
            cell.execution_count = i + 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {i} a\n"),
                            nbformat.v4.new_output("stream", name="stdout", text=f"cell {i} b\n")]
    nb.cells.insert(2, nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}))
    nb.metadata["papermill"] = {**stamp, "parameters": {"profile": "smoke"}}
    out = tmp_path / "executed.ipynb"
    nbformat.write(nb, str(out))
    return out


def test_store_outputs_in_source_keeps_no_timestamps_or_durations(tmp_path):
    source = tmp_path / "nb.ipynb"
    source.write_bytes((paths.NOTEBOOKS / "03_training.ipynb").read_bytes())
    reproduce.store_outputs_in_source(_executed_like(source, tmp_path), source)
    text = source.read_text()
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), "a timestamp was stored"
    assert '"duration"' not in text and '"papermill"' not in text and '"execution"' not in text
    nb = nbformat.read(source, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "injected-parameters" not in text
    assert [o["text"] for o in code[0].outputs] == ["cell 1 a\ncell 1 b\n"]     # chunks merged
    first = source.read_bytes()
    reproduce.store_outputs_in_source(_executed_like(source, tmp_path), source)
    assert source.read_bytes() == first                        # same run -> same bytes


def test_one_notebook_runs_with_overrides(home, monkeypatch):
    """A real kernel: a one-cell-per-role notebook receives the overrides through papermill."""
    nbdir = home / "nbs"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("from vstlib import report"),
                nbformat.v4.new_code_cell('profile = "smoke"\noverrides = []', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("cfg = report.start(profile, overrides)"),
                nbformat.v4.new_code_cell("print('epochs', cfg.train.epochs)")]
    nbformat.write(nb, str(nbdir / "01_x.ipynb"))
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    monkeypatch.setenv("PYTHONPATH", str(paths.ROOT))          # the kernel imports this checkout
    reproduce.run("smoke", overrides=["train.epochs=1"])
    assert nbformat.read(nbdir / "01_x.ipynb", as_version=4).cells[2].outputs == []   # reduced: not stored
    done = nbformat.read(paths.results_dir("smoke") / "notebooks" / "01_x.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in done.cells if c.cell_type == "code" for o in c.outputs)
    assert "reduced run: train.epochs=1" in text and "epochs 1\n" in text
    assert json.loads(paths.run_config_path("smoke").read_text())["overrides"] == ["train.epochs=1"]


def test_kernels_get_the_malloc_tuning_unless_the_user_set_it(home, calls, monkeypatch):
    import os

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")
    reproduce.run("smoke", only=["01"])                 # kernels inherit os.environ
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == reproduce.MALLOC_TUNING["MALLOC_MMAP_THRESHOLD_"]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "123"
