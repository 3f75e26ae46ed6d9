"""`vst stylize` on the cpu profile: any aspect ratio, streamed in chunks, real vendored networks."""
import numpy as np
import pytest
import torch

from vstlib.backbones import make_backbone
from vstlib.cli import main
from vstlib.config import get_config
from vstlib.errors import InputError
from vstlib.rl.policy import LatentPolicy
from vstlib.stylize import frame_chunks, stylized_chunks
from vstlib.video.io import read_frames

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def wide_clip(home, write_video):
    """A 5-frame 40x72 (non-square) mp4: a smooth pattern sliding right by 2 px per frame."""
    g = np.random.default_rng(0)
    base = torch.nn.functional.interpolate(torch.from_numpy(g.random((1, 3, 5, 12))).float(), size=(40, 96),
                                           mode="bicubic", align_corners=False).clamp(0, 1)[0]
    frames = np.stack([(base[:, :, 2 * t:2 * t + 72].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                       for t in range(5)])                                       # (5,40,72,3)
    return write_video(home / "wide.mp4", frames)


def test_stylize_cli_non_square_mp4(wide_clip, home, capsys):
    out = home / "out.mp4"
    assert main(["stylize", "--profile", "cpu", "--video", str(wide_clip), "--out", str(out),
                 "--size", "40", "--chunk", "2", "--set", "train.device=cpu"]) == 0
    frames = read_frames(out)                                                   # the project's reader
    assert frames.shape == (5, 40, 72, 3)                                       # aspect kept, no crop
    assert frames.std() > 10                                                    # real stylized pixels
    assert "5 frames, 72x40" in capsys.readouterr().out


def test_a_missing_style_image_is_one_line_naming_it_and_the_vendored_paintings(wide_clip, home, capsys):
    assert main(["stylize", "--profile", "cpu", "--video", str(wide_clip), "--out", str(home / "o.mp4"),
                 "--style", str(home / "my_photo.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "my_photo.png" in err[0] and "not found" in err[0] and "starry_night" in err[0]
    assert not (home / "o.mp4").exists()


def test_chunking_does_not_change_frames(wide_clip):
    """Chunks of 2 frames give the frames of one 5-frame chunk, with the policy carrying L_{t-1}."""
    cfg = get_config("cpu")
    bb = make_backbone(cfg.backbone.__class__(**{**cfg.backbone.__dict__, "resolution": 40}), "cpu", None)
    torch.manual_seed(0)
    policy = LatentPolicy(latent_channels=bb.latent_channels, hidden=8, gate_init=-3.0).eval()
    style = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))   # any image
    runs = {}
    for chunk in (5, 2):
        runs[chunk] = torch.cat(list(stylized_chunks(bb, frame_chunks(wide_clip, 40, chunk), style, policy)))
    base = torch.cat(list(stylized_chunks(bb, frame_chunks(wide_clip, 40, 2), style, None)))
    assert runs[5].shape == (5, 3, 40, 72)
    assert torch.allclose(runs[2], runs[5], atol=1e-5)
    assert torch.equal(runs[5][0], base[0])                                    # frame 0: the baseline
    assert (runs[5][1:] - base[1:]).abs().mean() > 1e-3                       # the policy acts from frame 1


def test_select_style_by_name_and_painting():
    from vstlib.backbones.faststyle import FastStyle

    cfg = get_config("cpu").backbone
    c, p = FastStyle.select_style(cfg, "scream")
    assert c.style_net == "scream" and p.name == "the_scream.jpg" and p.is_file()
    c, p = FastStyle.select_style(cfg, "/anywhere/udnie.jpg")
    assert c.style_net == "udnie"
    assert FastStyle.select_style(cfg, None)[0].style_net == "wave"
    with pytest.raises(InputError, match="no fast style network"):
        FastStyle.select_style(cfg, "starry_night.jpg")


def test_flow_policy_streams_with_flows_carried_across_chunks(wide_clip):
    """A flow-aware policy (the cpu main run's) stylizes a user's video: chunks of 2 frames give
    the frames of one chunk (last frame, latent and OUTPUT latent carried), and it needs flows."""
    from vstlib.stylize import _flows_fn

    cfg = get_config("cpu")
    bb = make_backbone(cfg.backbone.__class__(**{**cfg.backbone.__dict__, "resolution": 40}), "cpu", None)
    torch.manual_seed(0)
    policy = LatentPolicy(latent_channels=bb.latent_channels, hidden=8, gate_init=-3.0, observation="flow").eval()
    style, flows_fn = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)), _flows_fn(cfg.flow)
    runs = {chunk: torch.cat(list(stylized_chunks(bb, frame_chunks(wide_clip, 40, chunk), style, policy,
                                                  flows_fn=flows_fn))) for chunk in (5, 2)}
    assert runs[5].shape == (5, 3, 40, 72)
    assert torch.allclose(runs[2], runs[5], atol=1e-5)
    with pytest.raises(ValueError, match="flows_fn"):
        next(stylized_chunks(bb, frame_chunks(wide_clip, 40, 2), style, policy))
