"""Reproduce, then verify: a reproduction is compared with the committed results within a stated
tolerance (never rewrites them), `publish` is the one way to change them, and the CPU-kernel caps
are set by the commands that reproduce and test."""
import json
import math
import os
import re
import subprocess
import sys

import nbformat
import pytest

from vstlib import paths, reproduce, verify
from vstlib.cli import main
from vstlib.evaluation import tables


def _table(rows, profile="cpu"):
    return tables.latex_table(rows, ["method", "split", "content", "d_warp"], "cap", "tab:x", profile,
                              headers=["Method", "Split", "Content", "$\\Delta$warp"], digits=4)


ROWS = [{"method": "baseline", "split": "test", "content": 0.123456, "d_warp": 0.0},
        {"method": "policy", "split": "test", "content": 0.120001, "d_warp": -35.8123}]


def test_table_numbers_are_keyed_by_row_and_header_with_their_printed_resolution():
    nums = {n.id: n for n in verify.table_numbers(_table(ROWS), "tables/t.tex")}
    c = nums["tables/t.tex:policy/test:Content"]
    assert c.value == pytest.approx(0.1200) and c.resolution == pytest.approx(1e-4) and c.kind == "metric/fidelity"
    d = nums["tables/t.tex:policy/test:$\\Delta$warp"]
    assert d.value == pytest.approx(-35.8123) and d.kind == "change/warp"
    assert len(nums) == 4


def test_kinds_of_quantities():
    assert verify.kind_of("d_warp_error") == verify.kind_of("warp_indep_lo") == "change/warp"
    assert verify.kind_of("d_style") == verify.kind_of("$\\Delta$style std") == "change/style"
    assert verify.kind_of("n_clips") == verify.kind_of("reward_queries") == "count"
    assert verify.kind_of("train_s") == "time" and verify.kind_of("style") == "metric/style"
    nums = {n.column: n for n in verify.macro_numbers("\\newcommand{\\vstws}{10.0000}\n"
                                                      "\\newcommand{\\vsttempbase}{0.0123}\n", "tables/numbers.tex")}
    assert nums["ws"].kind == "setting" and nums["tempbase"].kind == "metric/warp"


@pytest.mark.parametrize("committed,reproduced,kind,ok", [
    (-35.80, -35.80 + 0.9 * verify.TOLERANCE["change/warp"][0], "change/warp", True),
    (-35.80, -35.80 + 1.1 * verify.TOLERANCE["change/warp"][0], "change/warp", False),
    (2.0, 2.0 * (1 + 0.9 * verify.TOLERANCE["metric/style"][1]), "metric/style", True),
    (2.0, 2.0 * (1 + 1.1 * verify.TOLERANCE["metric/style"][1]), "metric/style", False),
    (190.0, 191.0, "count", False), (190.0, 190.0, "count", True)])
def test_a_number_passes_within_its_tolerance_and_fails_beyond_it(committed, reproduced, kind, ok):
    ref = verify.Number("x.csv", "r", "c", committed, kind)
    assert verify.compare_number(ref, verify.Number("x.csv", "r", "c", reproduced, kind)).ok is ok


def test_missing_labels_and_nans():
    ref = verify.Number("x.csv", "r", "c", 1.0, "metric/other")
    assert not verify.compare_number(ref, None).ok
    assert verify.compare_number(verify.Number("x", "r", "c", math.nan, "metric/other"),
                                 verify.Number("x", "r", "c", math.nan, "metric/other")).ok
    assert not verify.compare_number(verify.Number("x", "r", "c", "a", "text"), verify.Number("x", "r", "c", "b", "text")).ok


@pytest.fixture
def committed(home, monkeypatch):
    """A committed result set in a temporary paper/ (table, CSV, published.json) and a reproduction
    of it under results/cpu/ (the home)."""
    import pandas as pd

    paper = home / "paper"
    monkeypatch.setattr(paths, "TABLES", paper / "tables")
    monkeypatch.setattr(paths, "PAPER_RESULTS", paper / "results")
    monkeypatch.setattr(paths, "FIGURES", home / "figures")
    (paper / "tables").mkdir(parents=True)
    (paper / "results").mkdir()
    (paper / "tables" / "t.tex").write_text(_table(ROWS))
    df = pd.DataFrame([{"method": "policy", "seed": 0, "split": "test", "d_warp_error": -35.8, "style": 1.5,
                        "train_s": 61.0, "n_clips": 2, "profile": "cpu"}])
    df.to_csv(paper / "results" / "eval_summary.csv", index=False)
    (paper / "results" / verify.PUBLISHED).write_text(json.dumps({"profile": "cpu"}))
    tables.write_table("t", _table(ROWS), "cpu")
    df.assign(train_s=75.0).to_csv(paths.ensure(paths.results_dir("cpu")) / "eval_summary.csv", index=False)
    return df


def test_verify_passes_an_equal_reproduction_and_ignores_timings(committed):
    rep = verify.verify("cpu")
    assert rep.ok and rep.skipped == 1 and len(rep.checks) == 4 + 3      # table cells + CSV (not train_s)
    assert "all 7 committed numbers reproduced within tolerance" in rep.line()
    assert paths.verification_path("cpu").exists() and paths.verification_path("cpu", ".csv").exists()


def test_a_changed_number_fails_and_is_named(committed, capsys, monkeypatch):
    committed.assign(d_warp_error=-34.0).to_csv(paths.results_dir("cpu") / "eval_summary.csv", index=False)
    rep = verify.verify("cpu")
    assert not rep.ok and [c.id for c in rep.failed] == ["results/eval_summary.csv:policy/0/test:d_warp_error"]
    assert rep.line().startswith("verification FAILED: 1 of 7") and "d_warp_error (-35.8 -> -34)" in rep.line()
    assert "**NO**" in paths.verification_path("cpu").read_text()
    monkeypatch.setattr(reproduce, "run", lambda *a, **k: {})
    assert reproduce.main("cpu") == 1                                     # `vst reproduce` exits non-zero
    assert capsys.readouterr().out.strip().splitlines()[-1] == rep.line()
    (paths.results_dir("cpu") / "eval_summary.csv").unlink()
    assert "missing" in verify.verify("cpu").line()


def test_generated_prose_is_compared_as_text(committed):
    (paths.TABLES / "method.tex").write_text("\\begin{itemize}\n\\item Learner: pathwise, 2 epochs.\n\\end{itemize}\n")
    tables.write_table("method", "\\begin{itemize}\n\\item Learner:  pathwise, 2 epochs.\n\\end{itemize}", "cpu")
    assert verify.verify("cpu").ok                                        # whitespace is not content
    tables.write_table("method", "\\begin{itemize}\n\\item Learner: pathwise, 3 epochs.\n\\end{itemize}", "cpu")
    rep = verify.verify("cpu")
    assert [c.id for c in rep.failed] == ["tables/method.tex:text:"]


def test_another_profile_has_nothing_to_verify(committed):
    rep = verify.verify("smoke")
    assert rep.ok and not rep.checks and "no committed results of profile 'smoke'" in rep.line()


def test_publish_copies_the_reproduction_into_place_and_refuses_a_reduced_run(committed, monkeypatch):
    nbdir = paths.ensure(paths.home() / "nbs")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell(reproduce.VERIFY_CELL)]
    nbformat.write(nb, str(nbdir / "01_x.ipynb"))
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    with pytest.raises(reproduce.VstError, match="incomplete"):
        reproduce.publish("cpu")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nbformat.write(nb, str(paths.ensure(paths.results_dir("cpu") / "notebooks") / "01_x.ipynb"))
    fig = paths.ensure(paths.figures_dir("cpu")) / "a.png"
    fig.write_bytes(b"png")
    paths.ensure(paths.FIGURES)
    (paths.FIGURES / "stale.png").write_bytes(b"old")                    # a figure this run no longer makes
    tables.write_table("t", _table([dict(ROWS[0], content=0.5)]), "cpu")
    assert not verify.verify("cpu").ok
    reproduce.publish("cpu")
    assert sorted(p.name for p in paths.FIGURES.iterdir()) == ["a.png"]
    assert verify.verify("cpu").ok                                        # what is committed now
    assert (paths.PAPER_RESULTS / "eval_summary.csv").read_text() == (paths.results_dir("cpu") / "eval_summary.csv").read_text()
    stored = nbformat.read(nbdir / "01_x.ipynb", as_version=4).cells
    assert stored[0].outputs[0]["text"] == "1\n"
    assert stored[1].outputs[0]["text"] == verify.verify("cpu").line() + "\n"    # what a rerun now prints
    assert "all" in stored[1].outputs[0]["text"]
    report_ = paths.run_config_path("cpu")
    report_.write_text(json.dumps({"overrides": ["reward.w_temp=1"]}))
    with pytest.raises(reproduce.VstError, match="reduced run"):
        reproduce.publish("cpu")
    assert main(["publish", "--profile", "cpu", "--force"]) == 0


def test_the_sanitizer_masks_cpu_dependent_digits_and_nothing_else():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((paths.ROOT / "tests" / "nbval_sanitize.cfg").read_text())

    def clean(s):
        for regex, repl in patterns:
            s = re.sub(regex, repl, s)
        return s

    a = "   method  d_warp\n0  policy  -35.81\n1     rloo   -9.9\nmean 1.23e-02, 3 updates"
    b = "   method   d_warp\n0  policy  -35.7712\n1     rloo  -10.01\nmean 1.19e-02, 3 updates"
    assert clean(a) == clean(b)
    # a change near zero flips its printed sign between CPUs ("-0.0 [-0.0, +0.0]" against "+0.0 [+0.0, +0.0]")
    assert clean("reinforce_paper -0.0 [-0.0, +0.0]") == clean("reinforce_paper +0.0 [+0.0, +0.0]")
    assert clean("3 updates") != clean("4 updates") and clean("policy") != clean("rloo")


MAKE_CAPS = "show-caps: ; @echo $$ATEN_CPU_CAPABILITY,$$ONEDNN_MAX_CPU_ISA,$$DNNL_MAX_CPU_ISA,$$MKL_CBWR"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the caps apply to x86-64")
def test_make_exports_the_kernel_caps_unless_switched_off(monkeypatch):
    # run under `make test KERNEL_CAPS=off`, make hands its command line down in MAKEFLAGS and the environment
    for key in (*reproduce.KERNEL_CAPS, "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VSTLIB_KERNEL_CAPS", "KERNEL_CAPS"):
        monkeypatch.delenv(key, raising=False)

    def caps(*args):
        r = subprocess.run(["make", "-s", f"--eval={MAKE_CAPS}", "show-caps", *args], cwd=paths.ROOT,
                           capture_output=True, text=True, env=os.environ)
        return r.stdout.strip()
    assert caps() == ",".join(reproduce.KERNEL_CAPS.values())           # one set of values, two places
    assert caps("KERNEL_CAPS=off") == ",,,"
    monkeypatch.setenv("VSTLIB_KERNEL_CAPS", "off")
    assert reproduce.cap_kernels() == {}
    monkeypatch.setenv("VSTLIB_KERNEL_CAPS", "on")
    assert reproduce.cap_kernels() == reproduce.KERNEL_CAPS and os.environ["MKL_CBWR"] == "AVX2"


@pytest.mark.slow
@pytest.mark.parametrize("caps", ["on", "off"])
def test_a_notebook_passes_nbval_with_and_without_the_kernel_caps(caps, tmp_path):
    """Notebook 01 (real clips, DIS flow, torch) re-executed under strict nbval with the stored
    outputs, once with the AVX2 caps and once with the CPU's own kernels."""
    env = {k: v for k, v in os.environ.items() if k not in reproduce.KERNEL_CAPS}
    env.update(VSTLIB_HOME=str(tmp_path), VSTLIB_PROGRESS="0", VSTLIB_KERNEL_CAPS=caps, PYTHONPATH=str(paths.ROOT))
    if caps == "on":
        env.update(reproduce.KERNEL_CAPS)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
                        "--nbval-sanitize-with", str(paths.ROOT / "tests" / "nbval_sanitize.cfg"),
                        str(paths.NOTEBOOKS / "01_data_prep.ipynb")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    assert re.search(r"\d+ passed", r.stdout)


def test_interval_cells_of_the_comparison_table_are_three_numbers():
    """"delta [lo, hi]" cells are compared number by number as changes in points (the perceptual
    distance as a metric): an interval's end that moves beyond the tolerance fails, not the text."""
    tex = ("\\begin{tabular}{llrr}\\toprule\nStyles & Method & Warp (indep.) & Perc. dist. \\\\\n\\midrule\n"
           "seen & policy & -47.2 [-50.0, -43.7] & 0.031 [0.024, 0.038] \\\\\n\\bottomrule\n\\end{tabular}\n")
    nums = {n.column: n for n in verify.table_numbers(tex, "tables/comparison.tex")}
    assert sorted(nums) == sorted(["Warp (indep.)", "Warp (indep.) lo", "Warp (indep.) hi",
                                   "Perc. dist.", "Perc. dist. lo", "Perc. dist. hi"])
    assert nums["Warp (indep.) lo"].value == -50.0 and nums["Warp (indep.) lo"].kind == "change/warp"
    assert nums["Perc. dist."].kind == "metric/fidelity"
    tol = verify.TOLERANCE["change/warp"][0]
    for moved, ok in ((-50.0 + 0.5 * tol, True), (-50.0 + 2 * tol + 0.1, False)):
        rep = verify.Number("tables/comparison.tex", "seen/policy", "Warp (indep.) lo", round(moved, 1), "change/warp", 0.1)
        assert verify.compare_number(nums["Warp (indep.) lo"], rep).ok is ok
