"""x"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = ("fit", "short_side")  # cfg.data.resize


def resize(frame: np.ndarray, size, mode: str = "fit") -> np.ndarray:
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


def aspect_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(H, W) for an h x w image with the short side ~= ``short``, aspect ratio kept, BOTH sides
    rounded to the nearest multiple of 8 (SD's VAE and the TAEF2 latent are 1/8 of the image;
    the short side is ``short`` itself when that is a multiple of 8, the long side moves by at
    most 4 px, i.e. the aspect ratio changes by under 4/short). Square in, square out."""
    s = max(8, int(round(short / 8)) * 8)
    scale = s / min(h, w)
    rnd = lambda v: max(8, int(round(v * scale / 8)) * 8)                 # noqa: E731
    return (s, rnd(w)) if h <= w else (rnd(h), s)
