"""Data: synthetic clips with exact flow, video/image IO and its errors, prepare, split, loaders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vstlib import flow, paths
from vstlib.config import get_config
from vstlib.errors import InputError
from vstlib.video import clips
from vstlib.video.io import (
    iter_frames,
    load_image,
    read_frames,
    to_rgb_uint8,
    to_tensor,
    to_uint8,
)
from vstlib.video.prepare import prepare, split_clips
from vstlib.video.resize import resize_uint8, short_side_size
from vstlib.video.synthetic import PHOTOS, make_style_image, make_synthetic_clip


def masked_mse(a, b, m):
    return float((((a - b) ** 2).mean(1, keepdim=True) * m).sum() / m.sum())


# --------------------------------------------------------------------------- synthetic clips
@pytest.mark.parametrize("name", PHOTOS)
def test_synthetic_clip_exact_flow_warps_back(name):
    clip = make_synthetic_clip(name, 5, 64)
    T = 5
    assert clip["frames"].shape == (T, 64, 64, 3) and clip["frames"].dtype == np.uint8
    for k, c in (("fw", 2), ("bw", 2), ("mask_fw", 1), ("mask_bw", 1)):
        assert clip[k].shape == (T - 1, c, 64, 64) and clip[k].dtype == np.float32
    fr = to_tensor(clip["frames"])
    fw, bw = torch.from_numpy(clip["fw"]), torch.from_numpy(clip["bw"])
    mf, mb = torch.from_numpy(clip["mask_fw"]), torch.from_numpy(clip["mask_bw"])
    assert 0.5 < mf.mean() < 0.995 and 0.5 < mb.mean() < 0.995  # occlusions and exits exist
    err = masked_mse(flow.warp(fr[1:], fw), fr[:-1], mf)
    err_bw = masked_mse(flow.warp(fr[:-1], bw), fr[1:], mb)
    still = masked_mse(fr[1:], fr[:-1], mf)
    flipped = masked_mse(flow.warp(fr[1:], -fw), fr[:-1], mf)
    assert err < 1e-3 and err_bw < 1e-3, (err, err_bw)
    assert still > 5 * err and flipped > 5 * err, (err, still, flipped)
    assert flow.mean_motion(fw) > 0.5  # passes the smoke motion filter


def test_synthetic_clip_fw_bw_are_inverse_on_visible_pixels():
    clip = make_synthetic_clip("astronaut", 3, 48)
    fw, bw = torch.from_numpy(clip["fw"]), torch.from_numpy(clip["bw"])
    m = torch.from_numpy(clip["mask_fw"])
    round_trip = fw + flow.warp(bw, fw)  # ~0 where visible (up to interpolation of bw)
    assert float((round_trip.norm(dim=1, keepdim=True) * m).sum() / m.sum()) < 0.05


def test_synthetic_clip_deterministic_and_name_dependent():
    a = make_synthetic_clip("coffee", 3, 32, seed=0)
    b = make_synthetic_clip("coffee", 3, 32, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = make_synthetic_clip("coffee", 3, 32, seed=1)
    d = make_synthetic_clip("rocket", 3, 32, seed=0)
    assert not np.allclose(a["fw"], c["fw"]) and not np.allclose(a["fw"], d["fw"])
    with pytest.raises(InputError, match="at least 2 frames"):
        make_synthetic_clip("coffee", 1, 32)
    with pytest.raises(InputError, match="unknown synthetic image"):
        make_synthetic_clip("no_such_photo", 3, 32)


def test_style_image_deterministic():
    a, b = make_style_image(48, 0), make_style_image(48, 0)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, make_style_image(48, 1))
    assert a.std() > 20  # a pattern, not a flat colour
    assert a[..., 2].mean() > a[..., 0].mean()  # night blue dominates


# --------------------------------------------------------------------------- reading
def test_read_frames_mp4_gif_and_folder(tmp_path, write_video, smooth_frames):
    mp4 = write_video(tmp_path / "a.mp4", smooth_frames)
    gif = write_video(tmp_path / "a.gif", smooth_frames)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(smooth_frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    for src, tol in ((mp4, 12), (gif, 40), (folder, 0)):
        fr = read_frames(src)
        assert fr.shape == smooth_frames.shape and fr.dtype == np.uint8, src
        assert np.abs(fr.astype(float) - smooth_frames).mean() <= tol, src
    # first N frames, resized: short side + centre crop, per frame
    small = read_frames(folder, max_frames=3, size=24)
    assert small.shape == (3, 24, 24, 3)
    want = resize_uint8(smooth_frames[2], 24)
    assert np.array_equal(small[2], want)
    assert read_frames(folder, size=(16, 20)).shape == (6, 16, 20, 3)


def test_iter_frames_streams(tmp_path, write_video, smooth_frames):
    it = iter_frames(write_video(tmp_path / "s.mp4", smooth_frames))
    first = next(it)
    assert first.shape == (48, 64, 3)
    it.close()


def test_grayscale_and_rgba_converted(tmp_path):
    g = (np.arange(12 * 10).reshape(12, 10) % 256).astype(np.uint8)
    rgba = np.dstack([np.full((12, 10, 3), 200, np.uint8), np.zeros((12, 10), np.uint8)])
    Image.fromarray(g).save(tmp_path / "g.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (1, 3, 12, 10) and torch.equal(x[0, 0], x[0, 2])
    assert torch.allclose(x[0, 1] * 255, torch.from_numpy(g).float())
    y = load_image(tmp_path / "rgba.png", size=8)
    assert y.shape == (1, 3, 8, 8) and torch.allclose(y, torch.full_like(y, 200 / 255))
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(g).save(folder / "0.png")
    Image.fromarray(rgba, "RGBA").save(folder / "1.png")
    fr = read_frames(folder)
    assert fr.shape == (2, 12, 10, 3)
    assert to_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    with pytest.raises(InputError, match="NaN"):
        to_rgb_uint8(np.full((2, 2, 3), np.nan, np.float32), tmp_path / "x.tif")


# --------------------------------------------------------------------------- bad input
def _raises_naming(fn, path, match):
    with pytest.raises(InputError, match=match) as err:
        fn(path)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


def test_bad_inputs_raise_one_clear_error(tmp_path, write_video, smooth_frames):
    _raises_naming(read_frames, tmp_path / "missing.mp4", "not found")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _raises_naming(read_frames, empty, "empty")
    raw = write_video(tmp_path / "ok.mp4", smooth_frames).read_bytes()
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(raw[: len(raw) // 2])
    _raises_naming(read_frames, trunc, "cannot decode")
    junk = tmp_path / "junk.mov"
    junk.write_bytes(b"not a video at all" * 50)
    _raises_naming(read_frames, junk, "cannot decode")
    one = write_video(tmp_path / "one.mp4", smooth_frames[:1])
    _raises_naming(read_frames, one, "need at least 2 frames")
    png = tmp_path / "still.png"
    Image.fromarray(smooth_frames[0]).save(png)
    _raises_naming(read_frames, png, "video is expected")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    _raises_naming(read_frames, txt, "unsupported file extension")
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    _raises_naming(read_frames, empty_dir, "no image frames")
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG garbage")
    _raises_naming(load_image, bad_png, "unreadable image")
    _raises_naming(load_image, tmp_path / "nope.jpg", "not found")


# --------------------------------------------------------------------------- split
def test_split_deterministic_and_seeded():
    ids = [f"c{i}" for i in range(10)]
    tr, te = split_clips(ids, 0.75, seed=0)
    assert (tr, te) == split_clips(list(reversed(ids)), 0.75, seed=0)  # order-independent
    assert sorted(tr + te) == ids and not set(tr) & set(te) and len(te) == 2  # round(2.5) = 2
    splits = {tuple(split_clips(ids, 0.75, seed=s)[1]) for s in range(6)}
    assert len(splits) > 1  # depends on the seed
    assert split_clips(["a", "b"], 1.0, 0)[1] != []  # >= 1 test clip when >= 2 clips
    assert len(split_clips(["a", "b", "c"], 0.0, 0)[0]) == 1  # >= 1 train clip too
    assert split_clips(["a"], 0.5, 0) == (["a"], [])


# --------------------------------------------------------------------------- prepare
def small_cfg(**data_kw):
    d = {"n_frames": 4, "size": 32, "n_clips": 0, "motion_threshold": 0.5}
    d.update(data_kw)
    return get_config("smoke", data=d)


def test_prepare_synthetic_writes_manifest_and_is_idempotent(vst_home, monkeypatch):
    cfg = small_cfg()
    m = prepare(cfg)
    ids = list(cfg.data.synthetic_images)
    assert sorted(m["train"] + m["test"]) == sorted(ids) and len(m["test"]) == 1
    assert m["profile"] == "smoke" and m["dropped"] == [] and m["config_digest"] == cfg.digest("data", "flow")
    assert json.loads(paths.manifest_path("smoke").read_text()) == m
    for c in m["clips"]:
        assert c["split"] in ("train", "test") and c["n_frames"] == 4 and c["size"] == 32 and c["motion"] > 0.5
        d = paths.clip_dir("smoke", c["id"])
        assert len(list((d / "frames").glob("*.png"))) == 4 and (d / "flow_exact.npz").exists()
        frames = clips.load_clip("smoke", c["id"])
        assert frames.shape == (4, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
        ref = make_synthetic_clip(c["id"], 4, 32)
        assert np.array_equal(to_uint8(frames), ref["frames"])  # PNG is lossless
    style = clips.load_style("smoke")
    assert style.shape == (1, 3, 32, 32)
    assert np.array_equal(to_uint8(style[0]), make_style_image(32))
    assert clips.load_manifest("smoke") == m
    assert not list(paths.clips_dir("smoke").glob(".tmp-*"))

    # re-run: no clip is rebuilt, same manifest
    mtimes = {p: p.stat().st_mtime_ns for p in paths.data_dir("smoke").rglob("*.png")}
    monkeypatch.setattr("vstlib.video.prepare.make_synthetic_clip", lambda *a, **k: pytest.fail("clip rebuilt"))
    assert prepare(cfg) == m
    assert {p: p.stat().st_mtime_ns for p in paths.data_dir("smoke").rglob("*.png")} == mtimes
    # another split seed reuses the clips too
    m2 = prepare(cfg.override(data={"split_seed": 5}))
    assert sorted(m2["train"] + m2["test"]) == sorted(ids)


def test_prepare_rebuilds_half_clip_and_drops_still_clips(vst_home):
    cfg = small_cfg(synthetic_images=("coffee", "rocket", "chelsea"))
    prepare(cfg)
    # a clip without its clip.json (interrupted by hand) is rebuilt
    (paths.clip_dir("smoke", "rocket") / "clip.json").unlink()
    (paths.clips_dir("smoke") / ".tmp-junk-x").mkdir()
    m = prepare(cfg)
    assert (paths.clip_dir("smoke", "rocket") / "clip.json").exists()
    assert not list(paths.clips_dir("smoke").glob(".tmp-*"))
    motions = {c["id"]: c["motion"] for c in m["clips"]}
    # a threshold between the motions drops the slow clip(s), and reports them
    thr = sorted(motions.values())[1]
    m2 = prepare(cfg.override(data={"motion_threshold": thr}))
    assert {d["id"] for d in m2["dropped"]} == {k for k, v in motions.items() if v < thr}
    assert all(c["motion"] >= thr for c in m2["clips"]) and len(m2["clips"]) == 2
    assert len(m2["test"]) == 1
    # n_clips caps the kept clips
    assert len(prepare(cfg.override(data={"n_clips": 2}))["clips"]) == 2
    with pytest.raises(InputError, match="motion_threshold"):
        prepare(cfg.override(data={"motion_threshold": 1e6}))


def test_prepare_videos_with_raft(vst_home, write_video, smooth_frames):
    vids = vst_home / "videos"
    vids.mkdir()
    write_video(vids / "b clip.mp4", smooth_frames)
    sub = vids / "a_frames"
    sub.mkdir()
    for i, f in enumerate(smooth_frames[:2]):
        Image.fromarray(f).save(sub / f"{i:03d}.png")
    cfg = get_config("smoke", data={"source": "videos", "n_frames": 2, "size": 32, "motion_threshold": 0.0},
                     flow={"source": "raft", "raft_iters": 1}, train={"device": "cpu"})
    m = prepare(cfg)
    assert [c["id"] for c in m["clips"]] == ["a_frames", "b_clip"]
    assert all(c["source"].startswith(str(vids)) for c in m["clips"])
    assert clips.load_clip("smoke", "b_clip").shape == (2, 3, 32, 32)
    assert clips.flow_cache_path(cfg, "b_clip").exists()  # RAFT flows cached for training
    with pytest.raises(InputError, match="flow.source"):
        prepare(cfg.override(flow={"source": "exact"}))


def test_prepare_style_path_and_missing(vst_home):
    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(vst_home / "my_style.jpg")
    cfg = small_cfg(synthetic_images=("coffee", "rocket"), style="my_style.jpg")
    prepare(cfg)
    assert clips.load_style("smoke").shape == (1, 3, 32, 32)
    with pytest.raises(InputError, match="Starry Night") as err:
        prepare(cfg.override(data={"style": "starry_night.jpg"}))
    assert str(vst_home / "starry_night.jpg") in str(err.value)


def test_loaders_explain_missing_prepare(vst_home):
    with pytest.raises(InputError, match="vst prepare --profile smoke"):
        clips.load_manifest("smoke")
    with pytest.raises(InputError, match="vst prepare"):
        clips.load_clip("smoke", "coffee")
    with pytest.raises(InputError, match="vst prepare"):
        clips.load_style("smoke")


# --------------------------------------------------------------------------- resize (issue 12 item 4)
def test_paper_profile_prepares_at_short_side_512_without_crops():
    cfg = get_config("paper")
    assert (cfg.data.size, cfg.data.resize, cfg.backbone.resolution) == (512, "short_side", 512)
    assert cfg.reward.loss_size == 256
    assert get_config("smoke").data.resize == "fit" and get_config("smoke").reward.loss_size == 0   # square, crops
    cpu = get_config("cpu")                            # MicroAST takes any aspect: the paper's layout at half size
    assert (cpu.data.resize, cpu.backbone.resolution, cpu.reward.loss_size) == ("short_side", 256, 128)


def test_resize_short_side_keeps_the_aspect_ratio(smooth_frames):
    f = smooth_frames[0]                                                   # (48,64,3)
    assert resize_uint8(f, 24).shape == (24, 24, 3)                        # "fit": square crop (cpu, smoke)
    assert resize_uint8(f, 24, "short_side").shape == (24, 32, 3)          # short side 24, 4:3 kept
    assert resize_uint8(f.transpose(1, 0, 2), 24, "short_side").shape == (32, 24, 3)   # portrait too
    assert resize_uint8(f, 48, "short_side") is f                          # already there: untouched
    # 512 x 910 (16:9 at 512) is not a multiple of 8: the long side rounds to 912, the short stays 512
    assert short_side_size(720, 1280, 512) == (512, 912)
    assert short_side_size(40, 72, 40) == (40, 72) and short_side_size(1920, 1080, 256) == (456, 256)
    assert short_side_size(100, 100, 30) == (32, 32) and short_side_size(100, 150, 30, multiple=1) == (30, 45)
    with pytest.raises(ValueError, match="resize"):
        resize_uint8(f, 24, "crop")


def test_fit_crops_the_centre_then_resizes():
    """A 40x60 image whose outer 10-px columns are black and centre white: "fit" to 20x20 keeps the
    centre 40x40, all white; "fit" to its own aspect ratio (20x30) crops nothing, so the black
    columns reach the edges."""
    img = np.full((40, 60, 3), 255, np.uint8)
    img[:, :10] = img[:, 50:] = 0
    assert resize_uint8(img, 20, "fit").min() == 255
    wide = resize_uint8(img, (20, 30), "fit")
    assert wide.shape == (20, 30, 3) and wide[:, 0].max() < 128 and wide[:, 15].min() == 255


def test_prepare_non_square_video_short_side_keeps_aspect(vst_home, write_video, smooth_frames):
    """A 48x64 (4:3) video prepared with resize="short_side", size 24: 24x32 frames, the flows
    at that size; with "fit" (the old behaviour) the same video becomes 24x24 centre crops."""
    vids = vst_home / "videos"
    vids.mkdir()
    write_video(vids / "wide.mp4", smooth_frames)
    cfg = get_config("smoke", data={"source": "videos", "n_frames": 3, "size": 24, "motion_threshold": 0.0,
                                    "resize": "short_side"},
                     flow={"source": "raft", "raft_iters": 1}, train={"device": "cpu"})
    m = prepare(cfg)
    frames = clips.load_clip("smoke", "wide")
    assert frames.shape == (3, 3, 24, 32)                                   # short side 24, aspect 4:3 kept
    info = json.loads((paths.clip_dir("smoke", "wide") / "clip.json").read_text())
    assert info["shape"] == [24, 32] and m["clips"][0]["size"] == 24
    fl = clips.clip_flows(cfg, "wide", frames)
    assert fl["fw"].shape == (2, 2, 24, 32) and fl["mask_bw"].shape == (2, 1, 24, 32)
    # the whole frame: the prepared frame is the video frame resized, nothing cut off
    ref = read_frames(vids / "wide.mp4", 3)
    assert np.array_equal(to_uint8(frames[1]), resize_uint8(ref[1], 24, "short_side"))
    # re-running reuses the clip (valid non-square clip.json); "fit" rebuilds it square
    assert prepare(cfg) == m
    prepare(cfg.override(data={"resize": "fit"}))
    assert clips.load_clip("smoke", "wide").shape == (3, 3, 24, 24)


def test_style_image_is_not_cropped(vst_home):
    """A 30x90 style image whose left, middle and right thirds are red, green and blue: prepared
    with "short_side" it is whole (32x96, all three colours at the matching columns); the "fit"
    centre crop of the old behaviour keeps only the green middle."""
    img = np.zeros((30, 90, 3), np.uint8)
    img[:, :30, 0] = img[:, 30:60, 1] = img[:, 60:, 2] = 255
    Image.fromarray(img).save(vst_home / "thirds.png")
    cfg = small_cfg(synthetic_images=("coffee", "rocket"), style="thirds.png", resize="short_side")
    prepare(cfg)
    s = to_uint8(clips.load_style("smoke")[0])
    assert s.shape == (32, 96, 3)
    left, mid, right = s[:, :24].mean((0, 1)), s[:, 40:56].mean((0, 1)), s[:, -24:].mean((0, 1))
    assert left.argmax() == 0 and mid.argmax() == 1 and right.argmax() == 2
    assert min(left[0], mid[1], right[2]) > 240
    prepare(cfg.override(data={"resize": "fit"}))
    crop = to_uint8(clips.load_style("smoke")[0])
    assert crop.shape == (32, 32, 3) and crop[..., 1].mean() > 200 and crop[..., [0, 2]].mean() < 30


def test_held_out_clips_are_all_test_clips_and_skip_the_motion_filter(vst_home, write_video, smooth_frames):
    """data.test_source: every clip there is kept (even one that barely moves) and goes to the test
    split, marked held out; the main source's clips are split as before."""
    main, held = vst_home / "videos", vst_home / "held"
    main.mkdir(), held.mkdir()
    for name in ("a", "b", "c"):
        write_video(main / f"{name}.mp4", smooth_frames)
    write_video(held / "a.mp4", smooth_frames)                            # the same name: another clip id
    write_video(held / "still.mp4", np.repeat(smooth_frames[:1], 6, axis=0))   # no motion at all
    cfg = get_config("smoke", data={"source": "videos", "test_source": "held", "n_frames": 4, "size": 32,
                                    "motion_threshold": 0.2, "train_fraction": 0.67},
                     flow={"source": "dis"})
    m = prepare(cfg)
    held_ids = {c["id"] for c in m["clips"] if c["held_out"]}
    assert held_ids == {"a_2", "still"} and held_ids <= set(m["test"])
    assert not held_ids & set(m["train"]) and len(m["train"]) == 2 and len(m["test"]) == 3
    assert {c["id"]: c["motion"] for c in m["clips"]}["still"] < 0.2          # kept although it is still
