"""The paper's LaTeX only includes files the reproduction generates, and only generated numbers."""
import re

from vstlib import paths

TEX = (paths.PAPER / "main.tex").read_text()


def test_every_included_file_exists():
    inputs = re.findall(r"\\input\{([^}]+)\}", TEX)
    graphics = re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\}", TEX)
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
