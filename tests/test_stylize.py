"""`vst stylize` on the cpu profile: any aspect ratio, streamed in chunks, real vendored networks."""
import av
import numpy as np
import pytest
import torch
from PIL import Image

from vstlib.backbones import make_backbone
from vstlib.cli import main
from vstlib.config import get_config
from vstlib.errors import InputError
from vstlib.flow import latent_flow
from vstlib.rl.policy import LatentPolicy
from vstlib.rl.step import LatentClip, policy_frames
from vstlib.stylize import frame_chunks, resolve_style, stylized_chunks
from vstlib.video.io import load_image, read_frames, save_frames, to_tensor, to_uint8

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
    # the evaluation's frames (rl.step.policy_frames on the whole clip, each frame decoded with the
    # per-frame path) are `vst stylize`'s, which decodes each frame once, after its action
    frames = torch.cat(list(frame_chunks(wide_clip, 40, 5)))
    base = bb.stylize(frames, style)
    clip = LatentClip(base.latents, *latent_flow(flows_fn(frames), *base.latents.shape[-2:]))
    assert torch.allclose(policy_frames(policy, bb, base, clip).clamp(0, 1), runs[5], atol=1e-5)
    with pytest.raises(ValueError, match="flows_fn"):
        next(stylized_chunks(bb, frame_chunks(wide_clip, 40, 2), style, policy))


def test_frames_folder_in_and_out_are_the_pipelines_frames_bit_exact(wide_clip, home, capsys):
    """A DAVIS-style folder of frames in, a folder of lossless PNGs out: exactly the frames the
    pipeline produced (to_uint8 of stylized_chunks), in order; an occupied folder is refused first."""
    src = home / "frames_in"
    save_frames(read_frames(wide_clip), src)                                     # 00000.png ...
    out = home / "frames_out"
    assert main(["stylize", "--profile", "cpu", "--video", str(src), "--out", str(out), "--size", "40",
                 "--chunk", "2", "--set", "train.device=cpu"]) == 0
    got = np.stack([np.asarray(Image.open(p).convert("RGB"))
                    for p in sorted(out.glob("*.png"))])                          # (5,40,72,3)
    cfg = get_config("cpu")
    bb = make_backbone(cfg.backbone.__class__(**{**cfg.backbone.__dict__, "resolution": 40}), "cpu", None)
    style = load_image(resolve_style(cfg, None)[1], cfg.backbone.resolution or cfg.data.size, cfg.data.resize)
    want = to_uint8(torch.cat(list(stylized_chunks(bb, frame_chunks(src, 40, 2), style, None))))
    assert got.shape == want.shape == (5, 40, 72, 3) and np.array_equal(got, want)
    assert not [p for p in home.iterdir() if p.name.startswith(".frames_out")]  # no temporary folder left
    capsys.readouterr()
    assert main(["stylize", "--profile", "cpu", "--video", str(src), "--out", str(out)]) == 2   # not empty
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frames_out" in err[0] and "empty folder" in err[0]


def test_mp4_keeps_the_frame_rate_and_takes_a_quality(wide_clip, home):
    sizes = {}
    for crf in (0, 40):
        out = home / f"q{crf}.mp4"
        assert main(["stylize", "--profile", "cpu", "--video", str(wide_clip), "--out", str(out), "--size", "40",
                     "--crf", str(crf), "--set", "train.device=cpu"]) == 0
        with av.open(str(out)) as c:
            assert float(c.streams.video[0].average_rate) == pytest.approx(10.0)   # the input's 10 fps
        sizes[crf] = out.stat().st_size
    assert sizes[0] > 2 * sizes[40]                                                # crf reaches the encoder


def test_no_false_cut_in_any_vendored_clip():
    """Every real clip shipped (train, test and held-out) is one shot: no cut is found inside it."""
    from vstlib import paths
    from vstlib.video.cuts import cut_scores, cuts

    videos = sorted((paths.ASSETS / "clips").glob("*.mp4")) + sorted((paths.ASSETS / "clips-eval").glob("*.mp4"))
    assert len(videos) >= 18
    for v in videos:
        x = next(frame_chunks(v, 64, chunk=20))                                  # (20,3,64,w)
        assert cuts(x) == [], (v.name, cut_scores(x).max())


def test_a_shot_cut_restarts_the_policy(home):
    """Two clips spliced together: a cut is found exactly there, and the frames after it are
    `vst stylize`'s frames of the second clip alone (the first shot does not bleed into it)."""
    from vstlib import paths
    from vstlib.stylize import _flows_fn
    from vstlib.video.cuts import cuts

    a = next(frame_chunks(paths.ASSETS / "clips" / "wolf.mp4", 40, chunk=5))
    b = next(frame_chunks(paths.ASSETS / "clips" / "woman-running.mp4", 40, chunk=6))
    w = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :w], b[..., :w]
    video = torch.cat([a, b])                                                    # cut before frame 5
    assert cuts(video) == [5]
    cfg = get_config("cpu")
    bb = make_backbone(cfg.backbone.__class__(**{**cfg.backbone.__dict__, "resolution": 40}), "cpu", None)
    torch.manual_seed(0)
    policy = LatentPolicy(latent_channels=bb.latent_channels, hidden=8, gate_init=-3.0, observation="flow").eval()
    style, flows_fn = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)), _flows_fn(cfg.flow)
    chunks = lambda x, n: [x[i:i + n] for i in range(0, len(x), n)]             # noqa: E731
    alone = torch.cat(list(stylized_chunks(bb, chunks(b, 4), style, policy, flows_fn=flows_fn)))
    for n in (4, 5):                                                             # a cut inside a chunk, at its start
        spliced = torch.cat(list(stylized_chunks(bb, chunks(video, n), style, policy, flows_fn=flows_fn)))
        assert torch.allclose(spliced[5:], alone, atol=1e-4)                      # batches differ: float noise
    bleed = torch.cat(list(stylized_chunks(bb, chunks(video, 4), style, policy, flows_fn=flows_fn,
                                           cut_threshold=None)))
    assert (bleed[5] - alone[0]).abs().max() > 1e-3                             # without the cut it would bleed


def test_vst_stylize_sees_the_frames_a_prepared_clip_has():
    """One resize for preparation, training and `vst stylize`: the frames `vst stylize` streams from
    a video are bit for bit the frames `vst prepare` stores for it (cpu profile: short side 256)."""
    from vstlib import paths

    cfg = get_config("cpu")
    video = paths.ASSETS / "clips" / "wolf.mp4"
    prepared = to_tensor(read_frames(video, 6, cfg.data.size, cfg.data.resize))           # (6,3,H,W)
    streamed = next(frame_chunks(video, cfg.data.size, chunk=6))
    assert prepared.shape == streamed.shape and min(prepared.shape[-2:]) == cfg.data.size
    assert torch.equal(prepared, streamed)
