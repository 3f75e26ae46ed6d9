"""The one cache scheme: keys are stable hashes; damaged files are rebuilt, never crash a run."""
import pytest
import torch

from vstlib import cache


def _build(calls):
    def build():
        calls.append(1)
        return {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(4)}
    return build


def test_key_is_stable_and_sensitive():
    from vstlib.config import SMOKE

    assert cache.key("clip", SMOKE.flow) == cache.key("clip", SMOKE.flow)
    assert cache.key("clip", SMOKE.flow) != cache.key("clip", SMOKE.override(flow={"raft_iters": 3}).flow)
    assert cache.key("a", "b") != cache.key("b", "a")
    # sha256 of the sorted-key JSON list of the parts (hand-checked value)
    assert cache.key({"b": 1, "a": [1, 2]}) == __import__("hashlib").sha256(
        b'[{"a": [1, 2], "b": 1}]').hexdigest()[:16]


def test_file_hash_is_the_sha256_of_the_bytes(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert cache.file_hash(p) == __import__("hashlib").sha256(b"abc" * 1000).hexdigest()


def test_cached_tensors_builds_once_then_reads(tmp_path):
    calls, p = [], tmp_path / "x.safetensors"
    first = cache.cached_tensors(p, _build(calls), "toy", expect=("a", "b"))
    again = cache.cached_tensors(p, _build(calls), "toy", expect=("a", "b"))
    assert len(calls) == 1 and all(torch.equal(first[k], again[k]) for k in first)


def _damage_truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage_garble(p):
    raw = bytearray(p.read_bytes())
    raw[-8:] = b"\xff" * 8                                   # tensor bytes changed: hash mismatch
    p.write_bytes(bytes(raw))


def _damage_header(p):
    p.write_bytes(b"not a safetensors file at all")


def _damage_nan(p):
    # a well-formed file whose content hash matches, but holds NaN
    t = {"a": torch.full((2, 3), float("nan")), "b": torch.ones(4)}
    cache.save_tensors(p, t)


def _damage_missing_key(p):
    cache.save_tensors(p, {"a": torch.zeros(2, 3)})


def test_tensors_read_do_not_follow_later_writes_to_the_file(tmp_path):
    """read_tensors copies: safetensors maps the file, and a tensor still backed by the mapping
    changed (to zeros) when the test rewrote the file in place."""
    p = tmp_path / "t.safetensors"
    cache.save_tensors(p, {"x": torch.arange(4096.0)})
    x = cache.read_tensors(p)["x"]
    p.write_bytes(p.read_bytes()[:64])                                  # rewritten in place, truncated
    assert torch.equal(x, torch.arange(4096.0))


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_garble, _damage_header, _damage_nan,
                                    _damage_missing_key],
                         ids=["truncated", "garbled", "not-safetensors", "nan", "missing-key"])
def test_damaged_cache_is_rebuilt_with_one_notice(tmp_path, capsys, damage):
    calls, p = [], tmp_path / "x.safetensors"
    cache.cached_tensors(p, _build(calls), "toy", expect=("a", "b"))
    damage(p)
    out = cache.cached_tensors(p, _build(calls), "toy", expect=("a", "b"))
    assert len(calls) == 2                                   # rebuilt
    assert torch.equal(out["a"], torch.arange(6, dtype=torch.float32).view(2, 3))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rebuilding" in err[0] and str(p) in err[0]
    assert cache.read_tensors(p, ("a", "b"))["b"].sum() == 4  # the rebuilt file is valid again


def test_flow_cache_rebuilt_after_truncation(vst_home, monkeypatch, capsys):
    """clips.clip_flows (RAFT source) survives a truncated cache file."""
    from vstlib import flow
    from vstlib.config import get_config
    from vstlib.video import clips

    cfg = get_config("smoke", flow={"source": "raft"}, data={"size": 16})
    frames = torch.rand(3, 3, 16, 16)
    calls = []

    def fake(a, b, **kw):                                    # a known flow: 1 px right
        calls.append(1)
        f = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        f[:, 0] = 1.0
        return f

    monkeypatch.setattr(flow, "estimate_flow", fake)
    out = clips.clip_flows(cfg, "c", frames)
    p = clips.flow_cache_path(cfg, "c")
    _damage_truncate(p)
    again = clips.clip_flows(cfg, "c", frames)
    assert len(calls) == 4 and all(torch.equal(out[k], again[k]) for k in out)
    assert "rebuilding" in capsys.readouterr().err
