"""Frames in and out: videos, folders of frames and images as uint8 RGB; uint8 <-> float tensors.

Frames are uint8 numpy (T,H,W,3) at IO boundaries and torch float (T,3,H,W) in [0,1] inside.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from PIL import Image

from vstlib.errors import InputError, require_file
from vstlib.files import atomic_path
from vstlib.video.resize import resize_uint8

VIDEO_EXTS = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv", ".flv"}


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


PathLike = Union[str, os.PathLike]


Size = Union[int, tuple, None]


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
    (``size``, ``mode`` as in ``video.resize.target_size``)."""
    if max_frames is not None and max_frames < 2:
        raise InputError(f"max_frames={max_frames}; video style transfer needs at least 2 frames", path,
                         "pass --max-frames 2 or more (or leave it out for the whole video)")
    out = []
    for frame in iter_frames(path):
        frame = resize_uint8(frame, size, mode)
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
    """Image file -> float (1,3,H,W) in [0,1]; grayscale/RGBA converted; ``size``, ``mode`` as in
    ``video.resize.target_size``."""
    p = require_file(path, "image", "check the image path")
    if p.is_dir():
        raise InputError("is a folder, expected an image file", p, "pass an image file (png/jpg)")
    return to_tensor(resize_uint8(_read_image_file(p), size, mode))[None]


def to_tensor(frames: np.ndarray):
    """uint8 (T,H,W,3) or (H,W,3) -> float (T,3,H,W) / (3,H,W) in [0,1]."""
    import torch

    t = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).float() / 255.0
    return t.movedim(-1, -3)


def to_uint8(frames) -> np.ndarray:
    """float (…,3,H,W) tensor in [0,1] -> uint8 (…,H,W,3) numpy (rounded, clamped)."""
    return (frames.detach().float().clamp(0, 1).movedim(-3, -1) * 255).round().byte().cpu().numpy()


def save_png(path: os.PathLike, image: np.ndarray) -> Path:
    """(H,W,3) uint8 -> PNG, written atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG", compress_level=1)
    return Path(path)


def save_frames(frames, folder: os.PathLike) -> list:
    """Frames (T,3,H,W) float in [0,1] (or uint8 (T,H,W,3) numpy) -> folder/00000.png, ... (atomic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = frames if isinstance(frames, np.ndarray) else to_uint8(frames)   # (T,H,W,3) uint8
    return [save_png(folder / f"{t:05d}.png", img) for t, img in enumerate(arr)]
