"""The README a newcomer reads: short, every link resolves, no result typed by hand."""
import re

from vstlib import paths

README = (paths.ROOT / "README.md").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 120


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    local = [ln for ln in links if not ln.startswith(("http://", "https://"))]
    assert "paper/results/summary.md" in local and "figures/tradeoff.png" in local
    assert [ln for ln in local if not (paths.ROOT / ln).exists()] == []


def test_no_result_is_typed_in_the_readme():
    """Percentages are results: they come from generated files the README links (95 % is a level)."""
    typed = [m for m in re.findall(r"[-+]?\d+(?:\.\d+)?\s?%", README) if not m.startswith("95")]
    assert typed == []
