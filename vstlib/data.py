"""Preparation: reading videos, synthetic clips with exact flow, the motion filter, the split, ``prepare``.

Prepared clips are read back through ``vstlib.clips``.

Frames are uint8 numpy (T,H,W,3) at IO boundaries and torch float (T,3,H,W) in [0,1] inside.
Resizing (``cfg.data.resize``, PIL bicubic, done per streamed frame so a long 4K video never sits
in memory) is either "fit": short side to ``size`` + centre crop (``PIL.ImageOps.fit``; square
frames and style image: the cpu and smoke profiles), or "short_side": short side to ``size``,
aspect ratio kept, both sides rounded to multiples of 8 (``utils.aspect_size``), never cropped;
the style image is then used whole (the paper profile, as the authors' ``T.Resize(512)``).

Layout written by ``prepare(cfg)`` under ``paths.data_dir(profile)``::

    clips/<id>/frames/00000.png ...   first n_frames frames, size x size ("fit") or short side size
    clips/<id>/flow_exact.npz         synthetic clips only: analytic fw, bw, mask_fw, mask_bw
    clips/<id>/clip.json              written last: marks a finished clip (reused on re-runs)
    style.png                         style image, size x size ("fit") or whole, short side size
    manifest.json                     clips, motion, split, dropped clips
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from . import cache, clips, paths
from .flow import mean_motion
from .utils import (InputError, _umask, aspect_size, atomic_save_npz, atomic_write_json, progress, require_file,
                    save_frames, save_png, to_tensor, to_uint8)

VIDEO_EXTS = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv", ".flv"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # skimage.data photos (shipped in the package)
STARRY_FIX = ("download The Starry Night (e.g. from Wikimedia Commons) to {path}, or use another image: "
              "`vst prepare --style IMAGE`")
STYLE_FIX = "check the path (a relative --style is read from the current folder), or pass another image with --style"

PathLike = Union[str, os.PathLike]
Size = Union[int, tuple, None]
RESIZE_MODES = ("fit", "short_side")  # cfg.data.resize


# --------------------------------------------------------------------------- pixels
def to_rgb_uint8(arr: np.ndarray, path: Optional[PathLike] = None) -> np.ndarray:
    """Any image array -> (H,W,3) uint8: grayscale -> 3 channels, alpha dropped, 16-bit/float scaled."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"unsupported image shape {a.shape}", path, "use an RGB, RGBA or grayscale image")
    if a.shape[-1] in (2, 4):  # drop alpha
        a = a[..., :-1]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        top = 65535.0 if a.max(initial=0) > 255 else 255.0
        return np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
    if not np.isfinite(a).all():
        raise InputError("image contains NaN/inf values", path, "re-export the image")
    a = a.astype(np.float64)
    if a.max(initial=0) > 1.0:  # float in [0,255]
        a = a / 255.0
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def resize(frame: np.ndarray, size: Size, mode: str = "fit") -> np.ndarray:
    """(H,W,3) uint8 -> resized, bicubic.

    ``mode="fit"``: short side to ``size`` + centre crop (int: square; (H,W): that shape).
    ``mode="short_side"``: the whole image, short side to ``size`` (an int), aspect ratio kept,
    both sides rounded to multiples of 8 (``utils.aspect_size``: the latent is 1/8 of the image).
    """
    if size is None:
        return frame
    if mode not in RESIZE_MODES:
        raise ValueError(f"data.resize must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "short_side":
        if not isinstance(size, int):
            raise ValueError(f"resize mode 'short_side' takes the short side (an int), got {size!r}")
        h, w = aspect_size(frame.shape[0], frame.shape[1], size)
        if frame.shape[:2] == (h, w):
            return frame
        return np.asarray(Image.fromarray(frame).resize((w, h), resample=Image.Resampling.BICUBIC))
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if frame.shape[:2] == (h, w):
        return frame
    img = ImageOps.fit(Image.fromarray(frame), (w, h), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(img)


def _read_image_file(p: Path) -> np.ndarray:
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"unreadable image ({type(err).__name__}: {err})", p,
                         "re-export it as PNG or JPEG") from None
    return to_rgb_uint8(arr, p)


# --------------------------------------------------------------------------- videos
def _frame_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                  and not f.name.startswith("."))


def iter_frames(path: PathLike) -> Iterator[np.ndarray]:
    """Stream (H,W,3) uint8 RGB frames of a video file (imageio/PyAV) or a folder of images."""
    p = Path(path)
    if p.is_dir():
        files = _frame_files(p)
        if not files:
            raise InputError("folder holds no image frames (png/jpg/...)", p,
                             "put the frames there as 00000.png, 00001.png, ... or pass a video file")
        for f in files:
            yield _read_image_file(require_file(f, "frame"))
        return
    require_file(p, "video", "check the path to the video (or folder of frames)")
    ext = p.suffix.lower()
    if ext in IMAGE_EXTS:
        raise InputError("is a single image, but a video is expected", p,
                         "pass a video file (mp4, mov, webm, gif...) or a folder of frames")
    if ext not in VIDEO_EXTS:
        raise InputError(f"unsupported file extension {ext or '(none)'!r}", p,
                         f"pass a video ({', '.join(sorted(VIDEO_EXTS))}) or a folder of frames")
    import imageio.v3 as iio

    fix = "the video is unreadable or truncated: re-download or re-encode it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`)"
    try:
        for frame in iio.imiter(p, plugin="pyav", format="rgb24"):
            yield to_rgb_uint8(frame, p)
    except InputError:
        raise
    except Exception as err:  # PyAV/imageio raise many types (OSError, av.error.*, ValueError...)
        raise InputError(f"cannot decode video ({type(err).__name__}: {err})", p, fix) from None


def read_frames(path: PathLike, max_frames: Optional[int] = None, size: Size = None,
                mode: str = "fit") -> np.ndarray:
    """First ``max_frames`` consecutive frames as uint8 (T,H,W,3), each resized as it streams
    (``size``, ``mode`` as in ``resize``)."""
    if max_frames is not None and max_frames < 2:
        raise InputError(f"max_frames={max_frames}; video style transfer needs at least 2 frames", path,
                         "pass --max-frames 2 or more (or leave it out for the whole video)")
    out = []
    for frame in iter_frames(path):
        frame = resize(frame, size, mode)
        if out and frame.shape != out[0].shape:
            raise InputError(f"frame {len(out)} has shape {frame.shape}, frame 0 has {out[0].shape}", path,
                             "give all frames the same size, or pass size=")
        out.append(frame)
        if max_frames is not None and len(out) >= max_frames:
            break
    if len(out) < 2:
        raise InputError(f"clip has {len(out)} frame(s); need at least 2 frames", path,
                         "pass a video (or folder) with 2 or more frames")
    return np.stack(out)


# --------------------------------------------------------------------------- images
def load_image(path: PathLike, size: Size = None, mode: str = "fit") -> torch.Tensor:
    """Image file -> float (1,3,H,W) in [0,1]; grayscale/RGBA converted; ``size``, ``mode`` as in ``resize``."""
    p = require_file(path, "image", "check the image path")
    if p.is_dir():
        raise InputError("is a folder, expected an image file", p, "pass an image file (png/jpg)")
    return to_tensor(resize(_read_image_file(p), size, mode))[None]


def make_style_image(size: int, seed: int = 0) -> np.ndarray:
    """Procedural Starry-Night-like style image (H,W,3) uint8: swirling blue strokes, yellow stars.

    Domain-warped stripes around a few random vortices, mapped to a night palette, plus glowing
    discs. Deterministic for (size, seed); made offline so the smoke profile needs no download.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    px, py = x.copy(), y.copy()
    for _ in range(5):  # vortices: rotate coordinates around each centre, strongest near it
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        ang = rng.choice([-1, 1]) * rng.uniform(2, 5) * np.exp(-((px - cx) ** 2 + (py - cy) ** 2) / r ** 2)
        dx, dy = px - cx, py - cy
        px, py = cx + dx * np.cos(ang) - dy * np.sin(ang), cy + dx * np.sin(ang) + dy * np.cos(ang)
    f1, f2, ph = rng.uniform(18, 26), rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
    v = 0.5 + 0.5 * np.sin(f1 * py + 2.0 * np.sin(f2 * px + ph))           # stripes (brush strokes)
    v = 0.7 * v + 0.3 * (0.5 + 0.5 * np.sin(60 * (px + py) + 3 * np.sin(15 * px)))  # fine texture
    palette = np.array([[10, 20, 60], [30, 60, 140], [70, 120, 200], [150, 190, 230], [240, 215, 90]], float)
    t = np.clip(v, 0, 1) * (len(palette) - 1)
    i = np.minimum(t.astype(int), len(palette) - 2)
    img = palette[i] + (palette[i + 1] - palette[i]) * (t - i)[..., None]
    for _ in range(6):  # stars: yellow cores with halos
        cx, cy, r = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.6), rng.uniform(0.02, 0.06)
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        glow = np.clip(1.2 * np.exp(-(d / r) ** 2) + 0.5 * (np.abs(np.sin(40 * d)) * (d < 2.5 * r)), 0, 1)
        img = img * (1 - glow[..., None]) + np.array([250, 230, 120]) * glow[..., None]
    ground = y > 0.8 + 0.05 * np.sin(9 * x + rng.uniform(0, 6))              # dark hills at the bottom
    img[ground] = img[ground] * 0.3 + np.array([15, 25, 20]) * 0.7
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- synthetic clips
def _photo(name: str) -> np.ndarray:
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None or not callable(fn):
        raise InputError(f"unknown synthetic image {name!r}", fix=f"use one of {', '.join(PHOTOS)} (skimage.data)")
    return to_rgb_uint8(fn())


def _rot(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _canvas(name: str, short: int, blur: float = 0.8) -> torch.Tensor:
    """Photo resized (antialiased) so its short side is ``short``, lightly blurred: (1,3,H,W) float.

    About one canvas pixel per frame pixel and a slight blur keep the texture band-limited, so
    bilinear re-sampling (rendering, then warping) adds little error.
    """
    from skimage.filters import gaussian
    from skimage.transform import resize as sk_resize

    img = _photo(name).astype(np.float64) / 255.0
    h, w = img.shape[:2]
    k = short / min(h, w)
    img = sk_resize(img, (max(2, round(h * k)), max(2, round(w * k))), anti_aliasing=True, order=1)
    img = gaussian(img, sigma=blur, channel_axis=-1)
    return torch.from_numpy(img).float().permute(2, 0, 1)[None]


def _sample(canvas: torch.Tensor, pts: np.ndarray) -> np.ndarray:
    """Bilinear sample of (1,3,Hc,Wc) at canvas pixel coords pts (H,W,2) (x, y); mirrored outside."""
    import torch.nn.functional as F

    _, _, hc, wc = canvas.shape
    g = torch.from_numpy(pts).float()
    g = torch.stack([2 * g[..., 0] / (wc - 1) - 1, 2 * g[..., 1] / (hc - 1) - 1], -1)[None]
    out = F.grid_sample(canvas, g, mode="bilinear", padding_mode="reflection", align_corners=True)
    return out[0].permute(1, 2, 0).numpy()


def make_synthetic_clip(name: str, n_frames: int, size: int, seed: int = 0, margin: float = 0.0) -> dict:
    """A clip with EXACT optical flow: camera motion over a photo plus one moving textured disc.

    Frame t at pixel x shows
    - the object (a disc of radius r cut from another photo) if |x - o_t| < r, at object-local
      point R(-phi_t)(x - o_t): it translates by its own velocity and spins;
    - else the background canvas at A_t(x) = C_t + z_t R(theta_t)(x - c): a similarity camera
      (pan C_t, zoom z_t, roll theta_t) around the frame centre c.
    Flow from frame a to b is analytic: A_b^{-1}(A_a(x)) - x on the background,
    o_b + R(phi_b - phi_a)(x - o_a) - x on the object. A pixel is visible in b when its target
    lies inside the frame and on the same layer there (background not covered by the disc).
    Masks are exact (``margin=0``); ``margin`` > 0 (e.g. 1.5, the bilinear footprint) also
    drops pixels that close to the disc edge, where a bilinear warp mixes object and background.
    Deterministic from (name, seed); needs n_frames >= 2.

    Returns dict(frames uint8 (T,S,S,3), fw, bw float32 (T-1,2,S,S), mask_fw, mask_bw (T-1,1,S,S)).
    """
    if n_frames < 2:
        raise InputError(f"synthetic clip {name!r}: n_frames={n_frames}; need at least 2 frames")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    other = PHOTOS[(PHOTOS.index(name) + 1) % len(PHOTOS)] if name in PHOTOS else PHOTOS[0]
    bg = _canvas(name, 2 * size)                      # canvas short side = 2 frames
    tex = _canvas(other, 2 * size)
    S = float(size)
    c = np.array([(size - 1) / 2, (size - 1) / 2])

    # camera: pan (canvas px / frame), zoom rate, roll rate; deterministic per name + seed
    ang = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(0.015, 0.035) * S * np.array([np.cos(ang), np.sin(ang)])
    dzoom, droll = rng.uniform(-0.012, 0.012), np.deg2rad(rng.uniform(-0.6, 0.6))
    C0 = np.array([(bg.shape[-1] - 1) / 2, (bg.shape[-2] - 1) / 2]) - pan * (n_frames - 1) / 2
    # object: disc radius, start, velocity (frame px / frame), spin; texture centre in the other photo
    r = rng.uniform(0.15, 0.22) * S
    oang = ang + np.pi + rng.uniform(-1.2, 1.2)       # moves against the pan: clear occlusions
    ovel = rng.uniform(0.03, 0.06) * S * np.array([np.cos(oang), np.sin(oang)])
    o0 = c - ovel * (n_frames - 1) / 2 + rng.uniform(-0.1, 0.1, 2) * S
    dspin = np.deg2rad(rng.uniform(-3, 3))
    tc = np.array([(tex.shape[-1] - 1) / 2, (tex.shape[-2] - 1) / 2]) + rng.uniform(-0.2, 0.2, 2) * S

    def cam(t):  # (C_t, M_t) with A_t(x) = C_t + M_t (x - c)
        return C0 + pan * t, (1 + dzoom) ** t * _rot(droll * t)

    def obj(t):
        return o0 + ovel * t, dspin * t

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    X = np.stack([xs, ys], -1)                        # (S,S,2) pixel coords (x, y)

    def in_disc(pts, t, grow=0.0):
        o, _ = obj(t)
        return np.linalg.norm(pts - o, axis=-1) < r + grow

    def render(t):
        C, M = cam(t)
        img = _sample(bg, C + (X - c) @ M.T)
        o, phi = obj(t)
        local = (X - o) @ _rot(-phi).T                # object-local coords
        fg = _sample(tex, tc + local)
        m = in_disc(X, t)[..., None]
        return np.where(m, fg, img)

    def flow(a, b):  # exact flow a -> b and visibility mask (S,S,2), (S,S)
        Ca, Ma = cam(a)
        Cb, Mb = cam(b)
        P = Ca + (X - c) @ Ma.T                       # canvas point seen at x in frame a
        tgt = c + (P - Cb) @ np.linalg.inv(Mb).T
        oa, pa = obj(a)
        ob, pb = obj(b)
        tgt_obj = ob + (X - oa) @ _rot(pb - pa).T
        is_obj = in_disc(X, a)
        tgt = np.where(is_obj[..., None], tgt_obj, tgt)
        inside = (tgt >= 0).all(-1) & (tgt <= size - 1).all(-1)
        fp = margin
        vis_bg = ~in_disc(X, a, fp) & ~in_disc(tgt, b, fp)
        vis_obj = in_disc(X, a, -fp) & in_disc(tgt, b, -fp)
        return tgt - X, inside & (vis_bg | vis_obj)

    frames = np.stack([render(t) for t in range(n_frames)])
    frames = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
    fws, bws, mfs, mbs = [], [], [], []
    for t in range(n_frames - 1):
        f, m = flow(t, t + 1)
        b, mb = flow(t + 1, t)
        fws.append(f), bws.append(b), mfs.append(m), mbs.append(mb)
    chw = lambda a: np.stack(a).transpose(0, 3, 1, 2).astype(np.float32)
    return {"frames": frames, "fw": chw(fws), "bw": chw(bws),
            "mask_fw": np.stack(mfs)[:, None].astype(np.float32), "mask_bw": np.stack(mbs)[:, None].astype(np.float32)}


# --------------------------------------------------------------------------- split
def split_clips(ids, train_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic (train, test) split of clip ids; >= 1 test clip when there are >= 2 clips."""
    ids = sorted(ids)
    n = len(ids)
    if n < 2:
        return ids, []
    n_test = min(n - 1, max(1, int(round(n * (1 - train_fraction)))))
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(ids[i] for i in perm[:n_test])
    train = sorted(ids[i] for i in perm[n_test:])
    return train, test


# --------------------------------------------------------------------------- prepare
ASSET_PREFIX = "assets:"  # config paths inside the package's vendored assets (vstlib/assets/...)


def _resolve(p: PathLike) -> Path:
    if isinstance(p, str) and p.startswith(ASSET_PREFIX):
        return paths.ASSETS / p[len(ASSET_PREFIX):]
    p = Path(p).expanduser()
    return p if p.is_absolute() else paths.home() / p


def _clip_id(stem: str, taken: set) -> str:
    cid = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "clip"
    base, i = cid, 1
    while cid in taken:
        i += 1
        cid = f"{base}_{i}"
    taken.add(cid)
    return cid


def _sources(cfg, videos: Optional[PathLike]) -> list[tuple[str, str, Optional[Path]]]:
    """[(clip_id, source label, path or None for synthetic)] in a stable order."""
    if cfg.data.source == "synthetic" and videos is None:
        return [(n, f"synthetic:{n}", None) for n in cfg.data.synthetic_images]
    folder = _resolve(videos if videos is not None else cfg.data.source)
    fix = f"put your videos (mp4/mov/webm/gif... or folders of frames) in {folder}, or pass --videos"
    if not folder.is_dir():
        raise InputError("video folder not found", folder, fix)
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith(".")
                     and (e.is_dir() or e.suffix.lower() in VIDEO_EXTS))
    if not entries:
        raise InputError("video folder holds no videos", folder, fix)
    taken: set = set()
    # vendored clips are labelled "assets:clips/<name>": the manifest and cache keys stay the same
    # wherever the checkout lives (an absolute path would differ between clones)
    src = cfg.data.source if videos is None else None
    vendored = isinstance(src, str) and src.startswith(ASSET_PREFIX)
    return [(_clip_id(e.stem, taken), f"{src.rstrip('/')}/{e.name}" if vendored else str(e), e) for e in entries]


def _clip_key(cfg, source: str) -> str:
    """What a finished clip depends on: re-runs with the same key reuse it."""
    part = {"source": source, "n_frames": cfg.data.n_frames, "size": cfg.data.size, "version": 1}
    if cfg.data.resize != "fit":       # absent for "fit": clips prepared before the field existed stay valid
        part["resize"] = cfg.data.resize
    if not source.startswith("synthetic:"):
        part["flow"] = cfg.digest("flow")  # motion of real clips comes from estimated flow
    return cache.json_digest(part)


def _finished(cdir: Path, key: str) -> Optional[dict]:
    """clip.json of a finished clip made with ``key`` whose frames and flows are whole, else None
    (a damaged one is rebuilt, with a one-line notice)."""
    meta = cdir / "clip.json"
    if not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict):
        print(f"prepare: {meta} is damaged; rebuilding the clip", file=sys.stderr, flush=True)
        return None
    if info.get("key") != key:
        return None
    try:
        clips.check_clip(cdir, info)
    except ValueError as err:
        print(f"prepare: clip {cdir.name!r} at {cdir} is damaged ({err}); rebuilding it",
              file=sys.stderr, flush=True)
        return None
    return info


def _build_clip(cfg, cid: str, source: str, path: Optional[Path], key: str, clips_root: Path,
                device=None) -> dict:
    """Make one clip in a temp dir (frames, exact flows, clip.json), then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cid}-", dir=clips_root))
    os.chmod(tmp, 0o777 & ~_umask())   # mkdtemp makes 0700: give the clip folder a plain mkdir's mode
    try:
        if path is None:
            clip = make_synthetic_clip(source.split(":", 1)[1], cfg.data.n_frames, cfg.data.size)
            frames = clip["frames"]
            atomic_save_npz(tmp / clips.EXACT_FLOW, **{k: clip[k] for k in clips.FLOW_KEYS})
            motion = mean_motion(clip["fw"])
        else:
            frames = read_frames(path, cfg.data.n_frames, cfg.data.size, cfg.data.resize)
            if cfg.flow.source == "exact":
                raise InputError(f"flow.source={cfg.flow.source!r} has no flows for real videos", path,
                                 "set flow.source='dis' or 'raft' (exact flows exist only for synthetic clips)")
            motion = mean_motion(clips.clip_flows(cfg, cid, to_tensor(frames), device)["fw"])
        save_frames(frames, tmp / "frames")                                    # (T,H,W,3) uint8
        info = {"id": cid, "source": source, "n_frames": int(len(frames)), "size": int(cfg.data.size),
                "shape": [int(frames.shape[1]), int(frames.shape[2])],               # (H, W) of the frames
                "motion": round(float(motion), 6), "key": key}
        atomic_write_json(tmp / "clip.json", info)
        final = clips_root / cid
        if final.exists():  # stale or half-made clip from other settings
            shutil.rmtree(final)
        os.replace(tmp, final)
        return info
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare_style(cfg, out: Path) -> None:
    size = cfg.data.size
    if cfg.data.style == "procedural":
        img = make_style_image(size, seed=0)
    else:
        src = _resolve(cfg.data.style)
        if not src.exists():
            fix = STARRY_FIX.format(path=src) if "starry_night" in src.name else STYLE_FIX
            raise InputError("style image not found", src, fix)
        img = to_uint8(load_image(src, size, cfg.data.resize)[0])   # "short_side": whole, never cropped
    if out.exists():
        try:
            with Image.open(out) as im:
                if np.array_equal(np.asarray(im.convert("RGB")), img):
                    return
        except Exception:  # noqa: BLE001 - a damaged style.png is simply rewritten
            pass
    save_png(out, img)


def prepare(cfg, videos: Optional[PathLike] = None, device=None, strict: bool = False) -> dict:
    """Prepare the clips and style image of ``cfg.profile``; returns (and writes) the manifest.

    Clips are made one at a time into a temp dir and renamed into place (an interruption never
    leaves a half clip); finished clips with the same inputs are reused. Clips whose mean flow
    magnitude is under ``cfg.data.motion_threshold`` are dropped; at most ``cfg.data.n_clips``
    are kept (0 = all), in sorted source order. ``device``: where RAFT runs (real videos).
    A video that cannot be read is skipped with a one-line notice and recorded as dropped
    (``strict=True``: stop with its error instead). Finished clips are validated and rebuilt
    when damaged.
    """
    dc = cfg.data
    root = paths.ensure(paths.data_dir(cfg.profile))
    clips_root = paths.ensure(paths.clips_dir(cfg.profile))
    for stale in clips_root.glob(".tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    _prepare_style(cfg, paths.style_path(cfg.profile))

    sources = _sources(cfg, videos)
    if cfg.flow.source == "exact" and any(path is not None for _, _, path in sources):  # a config fault, not a video's
        raise InputError("flow.source='exact' has no flows for real videos", sources[0][2].parent,
                         "set flow.source='raft' (exact flows exist only for synthetic clips)")
    kept, dropped = [], []
    for cid, source, path in progress(sources, desc="prepare clips"):
        if dc.n_clips and len(kept) >= dc.n_clips:
            break
        key = _clip_key(cfg, source)
        try:
            info = _finished(clips_root / cid, key) or _build_clip(cfg, cid, source, path, key, clips_root, device)
        except InputError as err:
            own = path is not None and err.path is not None and (err.path == path or path in err.path.parents)
            if strict or not own:
                raise                                              # --strict, or not this video's own fault
            print(f"prepare: skipped a video (--strict stops instead): {' '.join(str(err).split())}",
                  file=sys.stderr, flush=True)
            dropped.append({"id": cid, "source": source, "reason": " ".join(str(err).split())[:300]})
            continue
        entry = {"id": cid, "n_frames": info["n_frames"], "size": info["size"], "motion": info["motion"],
                 "source": source}
        if info["motion"] < dc.motion_threshold:
            dropped.append({"id": cid, "motion": info["motion"], "source": source})
        else:
            kept.append(entry)
    still = [d for d in dropped if "motion" in d]
    if still:
        print(f"dropped {len(still)} clip(s) with mean motion < {dc.motion_threshold} px: "
              + ", ".join(f"{d['id']} ({d['motion']:.2f} px)" for d in still))
    if not kept:
        if dropped and not still:
            raise InputError("no video could be read", root, "check the videos listed above (re-encode or replace them)")
        raise InputError(f"no clip has mean motion >= {dc.motion_threshold} px", root,
                         "add videos with more motion or lower data.motion_threshold")
    train, test = split_clips([c["id"] for c in kept], dc.train_fraction, dc.split_seed)
    split = {i: "train" for i in train} | {i: "test" for i in test}
    for c in kept:
        c["split"] = split[c["id"]]
    manifest = {"profile": cfg.profile, "config_digest": cfg.digest("data", "flow"), "clips": kept,
                "train": train, "test": test, "dropped": dropped}
    atomic_write_json(paths.manifest_path(cfg.profile), manifest)
    return manifest


__all__ = ["iter_frames", "read_frames", "load_image", "make_synthetic_clip", "make_style_image", "prepare",
           "split_clips", "to_rgb_uint8", "resize", "RESIZE_MODES", "VIDEO_EXTS", "IMAGE_EXTS", "PHOTOS"]
