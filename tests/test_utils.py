"""Atomic writes never leave half files; errors are one clear line."""
import json
import os

import pytest

from vstlib.errors import InputError, MissingWeightsError, require_file
from vstlib.files import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from vstlib.hub import weights_guard


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
