"""The paper's LaTeX only includes files the reproduction generates, and only generated numbers;
`make paper` builds it with every reference resolved and the generated tables in the PDF."""
import os
import re
import shutil
import subprocess

import pytest

from vstlib import paths

TEX = (paths.PAPER / "main.tex").read_text()


def test_every_included_file_exists():
    inputs = re.findall(r"\\input\{([^}]+)\}", TEX)
    optional = set(re.findall(r"\\IfFileExists\{([^}]+\.pdf)\}", TEX))      # figures of some profiles only
    graphics = [g for g in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\}", TEX) if g not in optional]
    assert inputs and graphics
    missing = [p for p in inputs if not (paths.PAPER / (p if p.endswith(".tex") else p + ".tex")).exists()]
    missing += [g for g in graphics if not (paths.FIGURES / g).exists()]
    assert not missing, f"run `make reproduce` to regenerate: {missing}"


def test_every_number_macro_is_generated():
    used = set(re.findall(r"\\(vst[a-zA-Z]+)", TEX))
    numbers = (paths.TABLES / "numbers.tex").read_text()
    defined = set(re.findall(r"\\newcommand\{\\(vst[a-zA-Z]+)\}", numbers))
    assert used and used <= defined, used - defined


def test_no_digits_typed_into_results_prose():
    # the Results section quotes numbers only through generated macros
    results = TEX.split(r"\section{Results}")[1].split(r"\section{Ablations}")[0]
    prose = re.sub(r"\\[a-zA-Z]+(\{[^}]*\})?|\[[^]]*\]|\{[^}]*\}", " ", results)
    assert not re.search(r"\d", prose), re.findall(r".{20}\d.{20}", prose)


# --- `make paper` builds the PDF (needs a TeX installation; .ci/run installs it) ---
needs_tex = pytest.mark.skipif(
    not (shutil.which("latexmk") and shutil.which("pdflatex") and shutil.which("make")),
    reason="no TeX engine: `make paper` needs latexmk and pdflatex "
    "(apt-get install latexmk texlive-latex-recommended; .ci/run installs them)")
needs_pdftotext = pytest.mark.skipif(
    not shutil.which("pdftotext"), reason="pdftotext absent (apt-get install poppler-utils)")

# LaTeX's own warnings; the build sets max_print_line so TeX does not wrap them across lines
UNDEFINED = re.compile(r"There were undefined references|(?:Reference|Citation) `[^']*' on page \d+ undefined")
NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")
TEX_ENV = {**os.environ, "max_print_line": "10000"}


def undefined_refs(log: str) -> list[str]:
    return UNDEFINED.findall(log)


def table_numbers(tex: str) -> list[str]:
    """The numbers in a generated table's body rows (between \\midrule and \\bottomrule)."""
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    return NUMBER.findall(body)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    proc = subprocess.run(["make", "-s", "paper", f"PAPER_OUT={out}"], cwd=paths.ROOT, env=TEX_ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


@needs_tex
def test_paper_builds_without_undefined_references(built):
    pdf = built / "main.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    found = undefined_refs((built / "main.log").read_text(errors="replace"))
    assert not found, found


@needs_tex
def test_undefined_reference_check_catches_one(tmp_path):
    # the check above would pass vacuously if the pattern missed LaTeX's real wording
    (tmp_path / "bad.tex").write_text(
        "\\documentclass{article}\\begin{document}See~\\ref{fig:none} and \\cite{nobody}.\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "bad.tex"], cwd=tmp_path, env=TEX_ENV,
                   capture_output=True, timeout=120)
    found = undefined_refs((tmp_path / "bad.log").read_text())
    assert any("fig:none" in f for f in found) and any("nobody" in f for f in found), found


@needs_tex
@needs_pdftotext
def test_paper_shows_the_generated_tables(built):
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(built / "main.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    for name in ("table1.tex", "table2.tex", "comparison.tex", "ablations.tex"):
        tex = (paths.TABLES / name).read_text()
        if name == "ablations.tex" and r"\midrule" not in tex:
            assert tex.startswith("% no ablation grid")               # a profile without grids says so
            continue
        numbers = table_numbers(tex)
        missing = [n for n in numbers if n not in text]
        assert numbers and not missing, f"{name}: {missing}"
