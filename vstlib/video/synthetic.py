"""Synthetic clips with exact optical flow and a procedural painting (offline test data)."""
from __future__ import annotations

import zlib

import numpy as np
import torch

from vstlib.errors import InputError
from vstlib.video.io import to_rgb_uint8

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # skimage.data photos (shipped in the package)


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
