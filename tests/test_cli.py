"""The `vst` command line: stylize a user's clip, the pipeline commands, one-line errors on bad input."""
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from vstlib.cli import main
from vstlib.config import parse_overrides

# the DiffuseST code path on tiny random modules (the default profile is cpu)
SETS = ["--profile", "smoke", "--set", "backbone.resolution=32", "--set", "backbone.num_inference_steps=2",
        "--set", "backbone.num_inversion_steps=2", "--set", "train.device=cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def clip(home):
    """A 5-frame synthetic mp4 at 12 fps (a textured disc moving over a photo) and a style image."""
    from vstlib.video.io import save_png
    from vstlib.video.synthetic import make_style_image, make_synthetic_clip

    frames = make_synthetic_clip("coffee", 5, 48)["frames"]                    # (5,48,48,3) uint8
    video = home / "in.mp4"
    iio.imwrite(video, frames, plugin="pyav", codec="libx264", fps=12, out_pixel_format="yuv420p")
    style = save_png(home / "style.png", make_style_image(40))
    return video, style


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err                                                 # ONE line, no traceback
    return err[0]


def test_parse_set():
    assert parse_overrides(["train.lr=5e-4", "data.n_clips=2", "flow.raft_weights=null", "eval.clip_model=ViT-B-32",
                      "reward.style_layers=[\"relu1_1\"]"]) == {
        "train": {"lr": 5e-4}, "data": {"n_clips": 2}, "flow": {"raft_weights": None},
        "eval": {"clip_model": "ViT-B-32"}, "reward": {"style_layers": ["relu1_1"]}}


def test_unknown_comparison_row_is_one_line_not_a_silently_missing_row(capsys):
    assert main(["compare", "--profile", "smoke", "--set", "compare.methods=[reinforce_paper,rlo]"]) == 2
    line = _err_line(capsys)
    assert "'rlo'" in line and "rloo" in line and "choose one of" in line


def test_stylize_writes_a_playable_mp4(clip, home, capsys):
    from vstlib.config import get_config
    from vstlib.rl.checkpoint import save_policy
    from vstlib.rl.policy import LatentPolicy

    video, style = clip
    out = home / "out.mp4"
    assert main(["stylize", "--video", str(video), "--style", str(style), "--out", str(out), *SETS]) == 0
    frames = iio.imread(out, plugin="pyav")
    assert frames.shape == (5, 32, 32, 3)
    assert abs(iio.immeta(out, plugin="pyav")["fps"] - 12) < 1e-3
    assert "5 frames" in capsys.readouterr().out

    # with a policy (any policy.safetensors written by `vst train`)
    cfg = get_config("smoke")
    ckpt = save_policy(home / "policy.safetensors", LatentPolicy.from_config(cfg.policy), cfg)
    out2 = home / "out2.mp4"
    assert main(["stylize", "--video", str(video), "--style", str(style), "--policy", str(ckpt),
                 "--out", str(out2), *SETS]) == 0
    f2 = iio.imread(out2, plugin="pyav")
    assert f2.shape == (5, 32, 32, 3)
    # frame 0 is DiffuseST's frame in both; with a near-zero action the rest stay close
    assert np.abs(f2.astype(int) - frames.astype(int)).mean() < 8


def test_bad_inputs_exit_2_with_one_line_naming_the_file(clip, home, capsys):
    import torch
    from safetensors.torch import save_file

    from vstlib.rl.policy import LatentPolicy

    video, style = clip
    out = str(home / "o.mp4")

    def run(*args):
        return main(["stylize", *args, "--out", out, *SETS])

    missing = home / "nope.mp4"
    assert run("--video", str(missing), "--style", str(style)) == 2
    assert str(missing) in _err_line(capsys)

    one = home / "one.mp4"
    iio.imwrite(one, np.zeros((1, 32, 32, 3), np.uint8), plugin="pyav", codec="libx264", fps=10)
    assert run("--video", str(one), "--style", str(style)) == 2
    line = _err_line(capsys)
    assert str(one) in line and "frame" in line

    garbage = home / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    assert run("--video", str(garbage), "--style", str(style)) == 2
    assert str(garbage) in _err_line(capsys)

    bad_style = home / "bad_style.png"
    bad_style.write_bytes(b"\x89PNG but not really")
    assert run("--video", str(video), "--style", str(bad_style)) == 2
    assert str(bad_style) in _err_line(capsys)

    # a policy of another shape (hidden=8 weights, no architecture metadata) -> named, with the fix
    other = home / "other.safetensors"
    save_file({k: v.contiguous() for k, v in LatentPolicy(hidden=8).state_dict().items()}, str(other))
    assert run("--video", str(video), "--style", str(style), "--policy", str(other)) == 2
    line = _err_line(capsys)
    assert str(other) in line and "LatentPolicy" in line and "shape" in line

    wrong_keys = home / "wrong.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(wrong_keys))
    assert run("--video", str(video), "--style", str(style), "--policy", str(wrong_keys)) == 2
    assert str(wrong_keys) in _err_line(capsys)

    pickle_file = home / "policy.pt"
    torch.save({"x": torch.zeros(1)}, pickle_file)                            # never unpickled
    assert run("--video", str(video), "--style", str(style), "--policy", str(pickle_file)) == 2
    assert str(pickle_file) in _err_line(capsys)

    assert main(["train", "--set", "train.nolr=1"]) == 2                      # unknown config field
    assert "nolr" in _err_line(capsys)
    assert main(["evaluate", *SETS]) == 2                                     # not prepared yet
    assert "vst prepare" in _err_line(capsys)
    assert not (home / "o.mp4").exists()


def test_subprocess_error_has_no_traceback(home):
    env = {**os.environ, "VSTLIB_HOME": str(home / "home")}
    r = subprocess.run([sys.executable, "-m", "vstlib.cli", "stylize", "--profile", "smoke", "--video", str(home / "missing.mp4"),
                        "--style", str(home / "missing.png"), "--out", str(home / "o.mp4")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert str(home / "missing.mp4") in lines[0] and "Fix:" in lines[0]


def test_pipeline_commands_end_to_end(home, capsys):
    """prepare -> baseline -> train -> evaluate through the CLI on a tiny setup."""
    sets = SETS + ["--set", "data.size=32", "--set", "data.n_clips=2", "--set", "data.n_frames=3",
                   "--set", "data.motion_threshold=0", "--set", "train.epochs=1",
                   "--set", "train.accumulation=1"]
    assert main(["prepare", *sets]) == 0
    assert main(["baseline", *sets]) == 0
    res = home / "home" / "results" / "smoke"
    assert len(list((res / "baseline").glob("*/00000.png"))) == 2
    assert (res / "baseline" / "summary.json").exists()
    assert main(["train", *sets]) == 0
    assert (res / "runs" / "main" / "policy.safetensors").exists()
    assert main(["evaluate", *sets]) == 0
    out = capsys.readouterr().out
    assert "table1" in out and "table2" in out and "smoke profile" in out
    assert (res / "table1.csv").exists() and (res / "table2.csv").exists()
    assert main(["download-weights"]) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_prepare_takes_a_style_image(home, capsys):
    from PIL import Image

    from vstlib.video.clips import load_style

    small = ["--profile", "smoke", "--set", "data.n_frames=2", "--set", "data.size=32", "--set", 'data.synthetic_images=["coffee"]',
             "--set", "data.motion_threshold=0"]
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, :25] = (255, 0, 0)                                                 # left half red, right black
    Image.fromarray(img).save(home / "mine.png")
    assert main(["prepare", "--style", str(home / "mine.png"), *small]) == 0
    style = load_style("smoke")                                               # (1,3,32,32), centre crop
    assert style.shape == (1, 3, 32, 32)
    assert style[0, 0, :, :12].min() > 0.9 and style[0, 0, :, 20:].max() < 0.1
    capsys.readouterr()
    assert main(["prepare", "--style", str(home / "missing.jpg"), *small]) == 2
    line = _err_line(capsys)
    assert str(home / "missing.jpg") in line and "--style" in line
