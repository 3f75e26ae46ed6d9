"""Every path the project reads or writes, resolved from the package, never from the cwd.

One module, showyourwork-style: notebooks, the CLI and tests all ask here.
``VSTLIB_HOME`` moves the writable root (data, results, caches) elsewhere, e.g. onto a
scratch disk; committed outputs (``figures/``, ``paper/``) always live in the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent                      # the repository (editable install)
NOTEBOOKS = ROOT / "notebooks"
# the committed (published) results: a reproduction writes under results/<profile>/ instead and
# `vst publish` copies it here (vstlib.verify)
FIGURES = ROOT / "figures"
PAPER = ROOT / "paper"
TABLES = PAPER / "tables"
PAPER_RESULTS = PAPER / "results"          # the result CSVs the committed tables come from
ASSETS = PACKAGE / "assets"                # vendored real weights, clips, paintings (scripts/vendor_assets.py)
SHARED = ROOT.parent / "shared"            # workplace data beside the checkout (may be absent)
SINTEL = SHARED / "data" / "sintel"


def home() -> Path:
    """Writable root for data, results and caches (default: the repository)."""
    return Path(os.environ.get("VSTLIB_HOME", ROOT)).resolve()


def data_dir(profile: str) -> Path:
    """Prepared clips, manifest and style image of one profile."""
    return home() / "data" / profile


def clips_dir(profile: str) -> Path:
    return data_dir(profile) / "clips"


def clip_dir(profile: str, clip_id: str) -> Path:
    return clips_dir(profile) / clip_id


def manifest_path(profile: str) -> Path:
    return data_dir(profile) / "manifest.json"


def style_path(profile: str) -> Path:
    return data_dir(profile) / "style.png"


def results_dir(profile: str) -> Path:
    """Tables, logs, checkpoints and executed notebooks of one profile."""
    return home() / "results" / profile


def figures_dir(profile: str) -> Path:
    """Figures (PNG + PDF) a reproduction of ``profile`` writes (published to ``FIGURES``)."""
    return results_dir(profile) / "figures"


def tables_dir(profile: str) -> Path:
    """LaTeX tables and ``numbers.tex`` a reproduction writes (published to ``TABLES``)."""
    return results_dir(profile) / "tables"


def verification_path(profile: str, suffix: str = ".md") -> Path:
    """The report comparing a reproduction with the committed results (``.md`` and ``.csv``)."""
    return (results_dir(profile) / "verification").with_suffix(suffix)


def run_config_path(profile: str) -> Path:
    """The resolved config and the overrides of the last reproduction (``report.start``)."""
    return results_dir(profile) / "run_config.json"


def run_dir(profile: str, run: str = "main") -> Path:
    """One training run (the main run, or one ablation cell)."""
    return results_dir(profile) / "runs" / run


def cache_dir(profile: str) -> Path:
    """Things that never change for fixed inputs: flows, inversions, Gram matrices."""
    return home() / ".cache" / profile


def ensure(path: Path) -> Path:
    """Create ``path`` (a folder) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path
