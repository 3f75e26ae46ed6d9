"""Issue 13: nothing lost, nothing silently wrong. Each test damages something the way a user or a
crash would (corrupt a file, kill a process, start two runs, inject a NaN) and checks the repair or
the one-line error. Tiny smoke setup: 2 clips of 3 frames at 32 px, 2 DDIM steps."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import isolated_home, tiny

from vstlib import paths
from vstlib.cli import main
from vstlib.config import get_config

TINY = tiny(data={"n_clips": 2, "n_frames": 3, "train_fraction": 0.5, "synthetic_images": ["coffee", "chelsea"]})
# the same config as --set flags for `vst`
SETS = ["--profile", "smoke"] + [a for sec, d in TINY.items() for k, v in d.items() for a in ("--set", f"{sec}.{k}={json.dumps(v)}")]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from isolated_home(tmp_path_factory.mktemp("relhome"))


@pytest.fixture(scope="module")
def cfg(home):
    from vstlib.video.prepare import prepare

    cfg = get_config("smoke", **TINY)
    prepare(cfg)
    return cfg


@pytest.fixture(scope="module")
def clip_media(home):
    """A 5-frame synthetic mp4 and a style image for `vst stylize`."""
    from vstlib.video.io import save_png
    from vstlib.video.synthetic import make_style_image, make_synthetic_clip

    frames = make_synthetic_clip("coffee", 5, 48)["frames"]                    # (5,48,48,3) uint8
    video = home / "in.mp4"
    iio.imwrite(video, frames, plugin="pyav", codec="libx264", fps=12, out_pixel_format="yuv420p")
    return video, save_png(home / "style.png", make_style_image(40))


def _err_line(capsys):
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1, err                                                 # ONE line, no traceback
    assert "Traceback" not in err[0]
    return err[0]


def _garble(path, at=0.6, n=64):
    """Flip n bytes in the middle of a file (its length and header stay intact)."""
    b = bytearray(path.read_bytes())
    i = int(len(b) * at)
    b[i:i + n] = bytes(255 - x for x in b[i:i + n])
    path.write_bytes(bytes(b))


def _truncate(path, keep=0.5):
    b = path.read_bytes()
    path.write_bytes(b[:int(len(b) * keep)])


@pytest.fixture(scope="module")
def run_r1(cfg):
    from vstlib.rl.train import train

    return train(cfg, run="r1")


# --------------------------------------------------------------------------- 1. lost policy file
def test_1_missing_policy_is_repaired_from_the_final_checkpoint(cfg, run_r1, capsys):
    from vstlib.errors import InputError
    from vstlib.evaluation.evaluate import evaluate
    from vstlib.files import load_tensors
    from vstlib.rl.checkpoint import load_policy, repair_policy
    from vstlib.rl.train import train

    out = run_r1
    pol = out / "policy.safetensors"
    want = load_tensors(pol)
    pol.unlink()                                  # a kill between the final checkpoint and the policy write
    with pytest.raises(InputError, match="rewrites it from the final checkpoint"):
        evaluate(cfg, run="r1")                   # not "train it first" (which did nothing before)
    log_before = (out / "log.jsonl").read_text()
    train(cfg, run="r1")                          # repairs it, no retraining
    assert (out / "log.jsonl").read_text() == log_before
    got = load_tensors(pol)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    _garble(pol)                                  # a damaged policy file is rewritten too
    assert repair_policy(out, cfg) == pol
    assert repair_policy(out, cfg) is None        # whole: nothing to do
    assert all(torch.equal(load_policy(pol, cfg.policy).state_dict()[k], want[k]) for k in want)


# --------------------------------------------------------------------------- 2. damaged prepared clips
@pytest.mark.parametrize("damage", ["truncate_png", "garble_png", "nan_flow", "truncate_flow", "delete_flow",
                                    "delete_png"])
def test_2_prepare_rebuilds_damaged_clips(cfg, capsys, damage):
    from vstlib.errors import InputError
    from vstlib.files import atomic_save_npz
    from vstlib.video.clips import EXACT_FLOW, clip_flows, load_clip
    from vstlib.video.prepare import prepare

    cid = "coffee"
    cdir = paths.clip_dir(cfg.profile, cid)
    good = load_clip(cfg.profile, cid).clone()                                 # (3,3,32,32)
    good_flow = clip_flows(cfg, cid)
    png, npz = cdir / "frames" / "00001.png", cdir / EXACT_FLOW
    if damage == "truncate_png":
        _truncate(png)
    elif damage == "garble_png":
        _garble(png, at=0.5, n=200)
    elif damage == "delete_png":
        png.unlink()
    elif damage == "nan_flow":
        with np.load(npz) as z:
            d = {k: z[k].copy() for k in z.files}
        d["fw"][0, 0, 3, 3] = np.nan
        atomic_save_npz(npz, **d)
    elif damage == "truncate_flow":
        _truncate(npz)
    else:
        npz.unlink()
    # reading it names the clip and the fix that works (prepare now rebuilds it)
    with pytest.raises(InputError, match="vst prepare") as e:
        load_clip(cfg.profile, cid)
        clip_flows(cfg, cid, good)
    assert str(cdir) in str(e.value)
    capsys.readouterr()
    prepare(cfg)
    err = capsys.readouterr().err
    assert f"clip '{cid}'" in err and "rebuilding" in err
    assert torch.equal(load_clip(cfg.profile, cid), good)
    assert all(torch.equal(clip_flows(cfg, cid)[k], good_flow[k]) for k in good_flow)


# --------------------------------------------------------------------------- 3 + 4. backbone caches
def _stylize(cfg, cache_dir, frames, style):
    from vstlib.backbones import make_backbone

    with torch.random.fork_rng():
        torch.manual_seed(cfg.backbone.seed)
        sty = make_backbone(cfg.backbone, torch.device("cpu"), cache_dir)
    return sty, sty.stylize(frames, style)


def _same(a, b):
    ta, tb = a.inversion.tensors(), b.inversion.tensors()
    return (torch.equal(a.images, b.images) and torch.equal(a.z0, b.z0) and torch.equal(a.xT, b.xT)
            and all(torch.equal(ta[k], tb[k]) for k in ta))


def test_3_4_damaged_backbone_caches_are_rebuilt_bit_identically(cfg, tmp_path, capsys):
    from vstlib.cache import HASH_KEY
    from vstlib.files import atomic_save_tensors, load_tensors
    from vstlib.video.clips import load_clip, load_style

    frames, style = load_clip(cfg.profile, "coffee"), load_style(cfg.profile)
    d = tmp_path / "bb"
    _, fresh = _stylize(cfg, d, frames, style)                              # computed, then written
    files = {p.name.split("-")[0]: p for p in d.glob("*.safetensors")}
    assert {"inv", "style", "out"} <= set(files)
    # 4. resumed from partial caches (inversion on disk, output not yet) == fresh, bit for bit
    files["out"].unlink()
    _, resumed = _stylize(cfg, d, frames, style)
    assert _same(fresh, resumed)
    _, cached = _stylize(cfg, d, frames, style)                             # everything from disk
    assert _same(fresh, cached)
    # 3. an output cut in half, a garbled inversion, a style cache with NaN pixels (valid hash!)
    _truncate(files["out"])
    _garble(files["inv"])
    t = load_tensors(files["style"])
    k = next(k for k, v in t.items() if v.is_floating_point())
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")
    from vstlib.cache import content_hash

    atomic_save_tensors(files["style"], t, metadata={HASH_KEY: content_hash(t)})
    capsys.readouterr()
    _, again = _stylize(cfg, d, frames, style)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("rebuilding it" in ln for ln in err), err  # one notice per file
    assert any(str(files["out"]) in ln and "does not decode" in ln for ln in err)
    assert any(str(files["inv"]) in ln for ln in err)
    assert any(str(files["style"]) in ln and "NaN" in ln for ln in err)
    assert _same(fresh, again)


# --------------------------------------------------------------------------- 5. outputs checked first
def test_5_stylize_checks_out_before_any_work(clip_media, home, tmp_path, capsys, monkeypatch):
    video, style = clip_media
    cache = paths.cache_dir("smoke") / "backbone"

    def run(out, *extra):
        return main(["stylize", "--video", str(video), "--style", str(style), "--out", str(out),
                     *extra, *SETS])

    folder = tmp_path / "existing.mp4"
    folder.mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    n0 = len(list(cache.glob("*"))) if cache.exists() else 0
    try:
        for out, words in [(folder, "folder"), (tmp_path / "x.avi", ".mp4"), (ro / "o.mp4", "writable")]:
            if out.parent == ro and os.access(ro, os.W_OK):                   # root ignores modes
                continue
            assert run(out) == 2
            line = _err_line(capsys)
            assert str(out) in line and words in line
    finally:
        ro.chmod(0o700)
    assert (len(list(cache.glob("*"))) if cache.exists() else 0) == n0          # nothing was stylized
    # a full disk while writing: one line naming the file, not a traceback
    import errno

    def full(self, images):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
    monkeypatch.setattr("vstlib.stylize.Mp4Writer.write", full)
    assert run(tmp_path / "ok.mp4") == 2
    line = _err_line(capsys)
    assert "No space left" in line and str(tmp_path / "ok.mp4") in line


# --------------------------------------------------------------------------- 6. bad policy files
def test_6_bad_policy_files_fail_up_front(clip_media, home, tmp_path, capsys):
    from safetensors.torch import save_file

    from vstlib.rl.checkpoint import save_policy
    from vstlib.rl.policy import LatentPolicy

    video, style = clip_media
    cfg = get_config("smoke")
    sd = {k: v.contiguous() for k, v in LatentPolicy.from_config(cfg.policy).state_dict().items()}
    meta = json.dumps({"policy": {"latent_channels": 4, "hidden": 16, "gate_init": 5.0, "sigma_init": 0.1}})
    cases = {}
    nan = {k: v.clone() for k, v in sd.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata={"vstlib": meta})
    cases["nan.safetensors"] = "NaN"
    save_file(sd, str(tmp_path / "notjson.safetensors"), metadata={"vstlib": "{policy: oops"})
    cases["notjson.safetensors"] = "not JSON"
    save_file(sd, str(tmp_path / "field.safetensors"),
              metadata={"vstlib": meta.replace('"hidden"', '"depth": 3, "hidden"')})
    cases["field.safetensors"] = "depth"
    save_file(sd, str(tmp_path / "latent.safetensors"), metadata={"vstlib": meta.replace('"latent_channels": 4',
                                                                                         '"latent_channels": 8')})
    cases["latent.safetensors"] = "8-channel"
    good = save_policy(tmp_path / "good.safetensors", LatentPolicy.from_config(cfg.policy), cfg)
    _garble(good, at=0.7, n=16)                                               # content hash catches it
    cases["good.safetensors"] = "content hash"
    for name, words in cases.items():
        p = tmp_path / name
        assert main(["stylize", "--video", str(video), "--style", str(style), "--policy", str(p),
                     "--out", str(tmp_path / "o.mp4"), *SETS]) == 2, name
        line = _err_line(capsys)
        assert str(p) in line and words in line, line
        assert not (tmp_path / "o.mp4").exists()


# --------------------------------------------------------------------------- 7. run-folder lock
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vstlib.rl.checkpoint import run_lock
    with run_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
""")


def test_7_second_train_on_a_run_folder_is_refused(cfg, home, capsys):
    out = paths.ensure(paths.run_dir(cfg.profile, "locked"))
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--run", "locked", *SETS]) == 2
        line = _err_line(capsys)
        assert f"pid {holder.pid}" in line and str(out) in line and "--run" in line
        assert not (out / "log.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)                                    # dies holding the lock
        holder.wait(30)
    # the kernel released the dead holder's lock: a new holder goes ahead, and names itself
    from vstlib.rl.checkpoint import run_lock

    with run_lock(out) as lock:
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")


# --------------------------------------------------------------------------- 8. NaN rendered frames
def test_8_nan_rendered_frames_skip_the_update(cfg, monkeypatch):
    from vstlib.backbones.diffusest.pipeline import DiffuseST
    from vstlib.files import read_jsonl
    from vstlib.rl.train import train

    cfg1 = get_config("smoke", **{**TINY, "train": {**TINY["train"], "accumulation": 1}})  # 2 updates per clip
    real = DiffuseST.render
    calls = []

    def render(self, latents, out, idx):                                      # first rollout: frame 2 NaN
        img = real(self, latents, out, idx)
        calls.append(1)
        if len(calls) == 1:
            img = img.clone()
            img[-1] = float("nan")
        return img
    monkeypatch.setattr(DiffuseST, "render", render)
    out = train(cfg1, run="nanframe", resume=False)
    log = read_jsonl(out / "log.jsonl")
    assert len(log) == 2                                                      # 1 train clip x 2 transitions
    assert not log[0]["skipped"]                                              # frames 0 -> 1 are fine
    assert log[1]["skipped"] and log[1]["reason"] == "non-finite rendered frames" and log[1]["frames"] == [2]
    assert log[1]["clip"] == log[0]["clip"]
    assert (out / "policy.safetensors").exists()


# --------------------------------------------------------------------------- 9. hints fit their context
def test_9_truncated_checkpoint_says_delete_or_no_resume(cfg, run_r1, capsys):
    out = paths.ensure(paths.run_dir(cfg.profile, "trunc"))
    ck = out / "checkpoint.safetensors"
    ck.write_bytes((run_r1 / "checkpoint.safetensors").read_bytes())
    _truncate(ck)
    assert main(["train", "--run", "trunc", *SETS]) == 2
    line = _err_line(capsys)
    assert str(ck) in line and "--no-resume" in line and "pass a .safetensors" not in line


def test_9_10_style_path_is_read_from_the_cwd_with_the_right_hint(home, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from vstlib.video.clips import load_style

    small = ["--profile", "smoke", "--set", "data.n_frames=2", "--set", "data.size=32", "--set", 'data.synthetic_images=["rocket"]',
             "--set", "data.motion_threshold=0"]
    monkeypatch.setenv("VSTLIB_HOME", str(tmp_path / "h"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 1] = 200
    Image.fromarray(img).save(work / "mine.png")
    assert main(["prepare", "--style", "mine.png", *small]) == 0                # relative: from the cwd
    assert load_style("smoke")[0, 1].mean() == pytest.approx(200 / 255, abs=1e-6)
    capsys.readouterr()
    assert main(["prepare", "--style", "typo.png", *small]) == 2
    line = _err_line(capsys)
    assert str(work / "typo.png") in line and "Starry Night" not in line
    # folders of prepared clips get a plain mkdir's mode, not mkdtemp's 0700
    mask = os.umask(0)
    os.umask(mask)
    cdir = paths.clip_dir("smoke", "rocket")
    assert (cdir.stat().st_mode & 0o777) == (0o777 & ~mask)
    # a manifest missing keys: one line naming it and `vst prepare`
    m = paths.manifest_path("smoke")
    m.write_text(json.dumps({"profile": "smoke", "clips": []}))
    assert main(["train", *small]) == 2
    line = _err_line(capsys)
    assert str(m) in line and "train" in line and "vst prepare" in line


def test_10_max_frames_0_and_unreadable_videos(clip_media, tmp_path, capsys, monkeypatch, write_video,
                                               smooth_frames):
    video, style = clip_media
    assert main(["stylize", "--video", str(video), "--style", str(style), "--out", str(tmp_path / "o.mp4"),
                 "--max-frames", "0", *SETS]) == 2
    line = _err_line(capsys)
    assert "--max-frames" in line and "1 frame" not in line
    # one unreadable video is skipped, recorded as dropped; --strict stops
    monkeypatch.setenv("VSTLIB_HOME", str(tmp_path / "h"))
    vids = tmp_path / "videos"
    vids.mkdir()
    write_video(vids / "a.mp4", smooth_frames)
    (vids / "b.mp4").write_bytes(b"not a video" * 50)
    sets = ["--profile", "smoke", "--videos", str(vids), "--set", "data.n_frames=2", "--set", "data.size=32", "--set",
            "data.motion_threshold=0", "--set", "flow.source=raft", "--set", "flow.raft_iters=1",
            "--set", "train.device=cpu"]
    assert main(["prepare", *sets]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and str(vids / "b.mp4") in err
    m = json.loads(paths.manifest_path("smoke").read_text())
    assert [c["id"] for c in m["clips"]] == ["a"]
    assert [d["id"] for d in m["dropped"]] == ["b"] and "decode" in m["dropped"][0]["reason"]
    assert main(["prepare", "--strict", *sets]) == 2
    assert str(vids / "b.mp4") in _err_line(capsys)


# --------------------------------------------------------------------------- internal errors, vendored weights
def test_internal_error_is_one_line_with_a_log_file(home, capsys, monkeypatch):
    from vstlib import cli

    def boom(args):
        raise RuntimeError("an unexpected bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser, "baseline", boom))
    assert main(["baseline"]) == 1
    line = _err_line(capsys)
    assert "internal error" in line and "an unexpected bug" in line
    log = line.split("traceback in ")[1].split(". ")[0]
    text = open(log).read()
    assert "Traceback" in text and "RuntimeError: an unexpected bug" in text


def _with(parser, command, func):
    sub = next(a for a in parser._subparsers._group_actions)
    sub.choices[command].set_defaults(func=func)
    return parser


def test_damaged_vendored_weight_is_one_line(tmp_path):
    from vstlib.errors import InputError
    from vstlib.nets.weights import load_weights

    src = paths.ASSETS / "weights" / "taef2_decoder.safetensors"
    if not src.exists():
        pytest.skip("vendored weights absent")
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes())
    _garble(bad, at=0.8, n=32)
    with pytest.raises(InputError) as e:
        load_weights(bad, "TAEF2 decoder")
    assert str(bad) in str(e.value) and "\n" not in str(e.value) and "vendor" in str(e.value)


def test_2_damaged_style_image_is_rewritten(cfg, capsys):
    from vstlib.errors import InputError
    from vstlib.video.clips import load_style
    from vstlib.video.prepare import prepare

    good = load_style(cfg.profile).clone()                                  # (1,3,32,32)
    p = paths.style_path(cfg.profile)
    _truncate(p, 0.3)
    with pytest.raises(InputError, match="vst prepare") as e:
        load_style(cfg.profile)
    assert str(p) in str(e.value)
    prepare(cfg)
    assert torch.equal(load_style(cfg.profile), good)
