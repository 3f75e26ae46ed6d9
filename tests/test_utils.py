"""Atomic writes never leave half files; errors are one clear line."""
import json
import os

import pytest
import torch

from vstlib.config import get_config
from vstlib.errors import InputError, MissingWeightsError, require_file
from vstlib.files import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from vstlib.hub import weights_guard
from vstlib.nets import vgg_r31
from vstlib.nets.memo import RecentInputs
from vstlib.rl.rewards import RewardModel


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "table.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["table.json"]  # no temp litter


def test_jsonl_survives_a_cut_line(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"step": 1})
    append_jsonl(log, {"step": 2})
    with open(log, "a") as f:
        f.write('{"step": 3, "rew')  # a crash mid-line
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]


def test_require_file_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"missing\.mp4: video not found"):
        require_file(tmp_path / "missing.mp4", "video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.mp4: .*0 bytes"):
        require_file(tmp_path / "empty.mp4", "video")


def test_weights_guard_turns_offline_failures_into_one_error():
    with pytest.raises(MissingWeightsError, match="hf download org/model") as err:
        with weights_guard("the backbone", ["org/model"]):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(ZeroDivisionError):  # real bugs are not disguised as missing weights
        with weights_guard("x"):
            1 / 0


def test_atomic_write_gives_ordinary_file_modes(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "new.txt", "x")
        assert fresh.stat().st_mode & 0o777 == 0o644           # like open(..., "w"), not mkstemp's 0600
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(old)


def test_recent_inputs_keeps_the_references_every_row_asks_for():
    """LRU, not FIFO: the originals and N(I_t), asked after every scored row's frames, stay
    remembered however many rows pass through (a FIFO of four recomputes them every few rows)."""
    calls = []

    def compute(x, layers):
        calls.append(x)
        return {n: x * (i + 1) for i, n in enumerate(layers)}

    memo, ref, orig = RecentInputs(4), torch.rand(2, 3), torch.rand(2, 3)
    for _ in range(6):
        row = torch.rand(2, 3)
        memo.get(row, ("a", "b"), compute)
        assert memo.get(row, ("a",), compute) is memo.get(row, ("a", "b"), compute)   # a subset: a hit
        memo.get(orig, ("a",), compute)
        memo.get(ref, ("a",), compute)
    assert len(calls) == 6 + 2                                           # every row once, the references once
    assert torch.equal(memo.get(ref, ("a",), compute)["a"], ref)
    ref.add_(1)                                                          # changed in place: a new version
    assert torch.equal(memo.get(ref, ("a",), compute)["a"], ref) and len(calls) == 9


def test_scoring_rows_runs_the_vgg_once_per_row(monkeypatch):
    """The reward's style, content and fidelity terms share the VGG pass over a row's frames, and the
    originals and N(I_t) are encoded once per clip: rows x 1 + 2 passes."""
    torch.manual_seed(0)
    net = vgg_r31.VGGR31().eval().requires_grad_(False)
    monkeypatch.setattr("vstlib.nets.perceptual.load_vgg_r31", lambda path=None: net)
    monkeypatch.setattr("vstlib.nets.perceptual._SHARED", {})
    passes = []
    features = net.features
    monkeypatch.setattr(net, "features", lambda x, layers=vgg_r31.LAYERS: passes.append(1) or features(x, layers))
    cfg = get_config("cpu").reward
    reward = RewardModel(cfg, torch.rand(1, 3, 32, 32))
    T, frames, ref = 4, torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    flows = {"fw": torch.zeros(T - 1, 2, 32, 32), "bw": torch.zeros(T - 1, 2, 32, 32),
             "mask_fw": torch.ones(T - 1, 1, 32, 32), "mask_bw": torch.ones(T - 1, 1, 32, 32)}
    base = {k: torch.ones(T - 1) for k in cfg.terms}
    passes.clear()
    for _ in range(5):
        reward.terms(torch.rand(T, 3, 32, 32), frames, flows, base, ref)
    assert len(passes) == 5 + 2
