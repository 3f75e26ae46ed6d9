"""Shared pytest fixtures and the tiny configs the end-to-end tests start from."""
from __future__ import annotations

import copy

import numpy as np
import pytest

# The tiny smoke setup of the end-to-end tests: 3 synthetic clips of 4 frames at 32 px (exact flows),
# 2 DDIM steps, the policy's gate open so that actions are visible; each update takes a fraction of
# a second. Tests override what they exercise with ``tiny(section={...})``.
TINY = {
    "data": {"n_clips": 3, "n_frames": 4, "size": 32, "motion_threshold": 0.0, "train_fraction": 0.67},
    "backbone": {"resolution": 32, "num_inference_steps": 2, "num_inversion_steps": 2, "batch_size": 4},
    "policy": {"hidden": 8, "gate_init": 0.0},
    "train": {"epochs": 1, "accumulation": 2, "checkpoint_every": 1, "lr": 1e-3, "device": "cpu"},
}


def tiny(**sections) -> dict:
    """``TINY`` with the fields of ``sections`` ({"train": {"epochs": 2}, ...}) replaced."""
    out = copy.deepcopy(TINY)
    for name, fields in sections.items():
        out.setdefault(name, {}).update(fields)
    return out


@pytest.fixture
def vst_home(tmp_path, monkeypatch):
    """A fresh writable root: paths.home() (data, results, caches) points into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("VSTLIB_HOME", str(home))
    return home


def isolated_home(root):
    """Point VSTLIB_HOME at ``root`` (progress bars off) for as long as the generator is open:
    the body of every module-scoped ``home`` fixture."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSTLIB_HOME", str(root))
        mp.setenv("VSTLIB_PROGRESS", "0")
        yield root


@pytest.fixture
def home(tmp_path):
    """A fresh VSTLIB_HOME at tmp_path/home for one test (progress off); returns tmp_path.
    Modules that share one prepared home override it with a module-scoped fixture."""
    for _ in isolated_home(tmp_path / "home"):
        yield tmp_path                                  # inputs are written beside the home


@pytest.fixture
def write_video():
    """write_video(path, frames uint8 (T,H,W,3)) -> path: a real mp4/gif/... via imageio + PyAV."""
    import imageio.v3 as iio

    def _write(path, frames):
        frames = np.asarray(frames, dtype=np.uint8)
        if str(path).endswith(".gif"):
            iio.imwrite(path, frames, duration=100, loop=0)
        else:
            iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=10)
        return path

    return _write


@pytest.fixture(scope="session")
def smooth_frames():
    """(6,48,64,3) uint8 smooth moving pattern (survives lossy video codecs)."""
    t, y, x = np.mgrid[0:6, 0:48, 0:64].astype(np.float64)
    r = 127.5 + 100 * np.sin((x + 2 * t) / 7.0)
    g = 127.5 + 100 * np.cos((y - t) / 5.0)
    b = 127.5 + 80 * np.sin((x + y) / 11.0)
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are overhead-bound: one intra-op thread is as fast, and immune to the
    OpenMP spin-wait slowdowns (10x+) seen when other processes share the 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
