"""``vst stylize``: any video, any length, any aspect ratio, streamed in chunks of frames.

    info = stylize_video(cfg, "in.mp4", "out.mp4", style=None, policy=None, size=None, chunk=16)

Memory stays bounded by one chunk (a 4K or 5-minute clip is read, resized, stylized and
written chunk by chunk). Frames keep the input's aspect ratio: short side = ``size`` (default
``cfg.data.size``), both sides rounded to multiples of 8 (the latent is 1/8); never a centre crop.
The policy sees (L_{t-1}, L_t) continuously: the last latent of a chunk is carried into the
next, so chunking never changes the frames (tests/test_stylize.py).

Hook for observations that need more than latents (e.g. flow): :func:`latent_chunks` yields
(frames, baseline output) per chunk, frames being the resized originals.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F

from vstlib.errors import InputError
from vstlib.files import atomic_path
from vstlib.runtime import progress
from vstlib.video.io import to_uint8
from vstlib.video.resize import aspect_size


def frame_chunks(video, short: int, chunk: int = 16, max_frames: Optional[int] = None) -> Iterator[torch.Tensor]:
    """Stream a video as float chunks (n,3,H,W) in [0,1], resized (aspect kept, see aspect_size)."""
    from vstlib.video.io import iter_frames

    buf, size, n = [], None, 0
    for frame in iter_frames(video):                                       # (h,w,3) uint8
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255  # (1,3,h,w)
        if size is None:
            size = aspect_size(x.shape[-2], x.shape[-1], short)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        buf.append(x)
        n += 1
        if len(buf) == chunk:
            yield torch.cat(buf)
            buf = []
        if max_frames is not None and n >= max_frames:
            break
    if buf:
        yield torch.cat(buf)


def latent_chunks(backbone, chunks: Iterable[torch.Tensor], style: torch.Tensor, device=None):
    """The hook: yields (frames (n,3,H,W), baseline output of those frames) per chunk."""
    for frames in chunks:
        frames = frames.to(device) if device is not None else frames
        yield frames, backbone.stylize(frames, style)


@torch.no_grad()
def stylized_chunks(backbone, chunks: Iterable[torch.Tensor], style: torch.Tensor, policy=None,
                    device=None, flows_fn: Optional[Callable] = None) -> Iterator[torch.Tensor]:
    """Yields the stylized frames (n,3,H,W) in [0,1] of each chunk: the per-frame baseline D(L_t),
    or with ``policy`` S_t = D(L_t + mu(obs_t)) from the video's frame 1 on (mean action).

    The policy's observation is (L_{t-1}, L_t), plus, for ``observation="flow"``, the previous
    OUTPUT latent warped along the input's flow and its visibility; ``flows_fn(frames (m,3,H,W))``
    gives that flow (fw, bw, masks of consecutive pairs). Everything carries across chunk
    boundaries (last frame, latent and output latent), so chunking never changes the output."""
    from vstlib.flow import warp
    from vstlib.rl.episodes import latent_flow

    use_flow = policy is not None and getattr(policy, "observation", "pair") == "flow"
    if use_flow and flows_fn is None:
        raise ValueError("a policy with observation='flow' needs flows_fn")
    prev = prev_frame = out_prev = None              # (1,C,h,w) L_{t-1}, (1,3,H,W), (1,C,h,w) L^out_{t-1}
    for frames, out in latent_chunks(backbone, chunks, style, device):
        images = out.images.float()                                        # (n,3,H',W')
        if policy is not None:
            L = backbone.policy_latents(out).float()                       # (n,C,h,w)
            first = prev is None
            Lx = L if first else torch.cat([prev, L])                      # (m,C,h,w), m = n or n+1
            if len(Lx) > 1:
                if use_flow:
                    fx = frames if first else torch.cat([prev_frame, frames])        # (m,3,H,W)
                    lat_bw, lat_mask = latent_flow(flows_fn(fx), *L.shape[-2:])      # (m-1,2,h,w), (m-1,1,h,w)
                    out_prev = Lx[:1] if first else out_prev
                    acts = []
                    for t in range(1, len(Lx)):                            # sequential: obs needs a_{t-1}
                        warped = warp(out_prev, lat_bw[t - 1:t])           # (1,C,h,w)
                        a = policy(Lx[t - 1:t], Lx[t:t + 1], warped, lat_mask[t - 1:t]).mean
                        acts.append(a)
                        out_prev = Lx[t:t + 1] + a
                    a = torch.cat(acts)                                    # (m-1,C,h,w)
                else:
                    a = policy(Lx[:-1], Lx[1:]).mean                       # (m-1,C,h,w)
                idx = torch.arange(1 if first else 0, len(L), device=L.device)
                S = backbone.render(Lx[1:] + a, out, idx).float()
                images = torch.cat([images[:1], S]) if first else S
            prev, prev_frame = L[-1:], frames[-1:]
        if images.shape[-2:] != frames.shape[-2:]:                         # square-only backbones
            images = F.interpolate(images, size=frames.shape[-2:], mode="bilinear", antialias=True,
                                   align_corners=False)
        yield images.clamp(0, 1)


def _flows_fn(cfg_flow) -> Callable:
    """Flows of a user's video for a flow-aware policy: the profile's estimator, or OpenCV DIS
    where the profile's flows only exist for synthetic clips ("exact")."""
    from vstlib.flow import get_estimator

    cfg_flow = cfg_flow if cfg_flow.source != "exact" else dataclasses.replace(cfg_flow, source="dis")
    estimate = get_estimator(cfg_flow.source)
    return lambda frames: estimate(frames, cfg_flow)


def _video_meta(video) -> tuple[float, Optional[int]]:
    """(fps, frame count or None) of a video; 10 fps for folders of frames / unknown rates."""
    try:
        import av

        with av.open(str(video)) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate or s.base_rate or 0)
            n = int(s.frames) or None
    except Exception:  # noqa: BLE001 - folders of frames, GIFs, odd containers: defaults
        return 10.0, None
    return (fps if 0 < fps < 1000 else 10.0), n


class Mp4Writer:
    """H.264 mp4 (yuv420p) written frame chunk by frame chunk, renamed into place on success."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps

    def __enter__(self):
        import av

        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._c = av.open(str(tmp), "w", format="mp4")
        self._s = self._c.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        self._s.pix_fmt = "yuv420p"
        self.n = 0
        return self

    def write(self, images: torch.Tensor) -> None:
        """images (n,3,H,W) in [0,1] (H, W even)."""
        import av

        arr = to_uint8(images)                                             # (n,H,W,3)
        if self.n == 0:
            self._s.height, self._s.width = arr.shape[1], arr.shape[2]
        for a in arr:
            for pkt in self._s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                self._c.mux(pkt)
        self.n += len(arr)

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                for pkt in self._s.encode():
                    self._c.mux(pkt)
        finally:
            self._c.close()
        return self._ctx.__exit__(*exc)


def resolve_style(cfg, style: Optional[str]):
    """(backbone config, style image path) for ``--style``; a backbone may map names to its own
    networks (``select_style`` classmethod, e.g. faststyle's wave|udnie|scream|wreck)."""
    from vstlib.backbones import BACKBONES
    from vstlib.video.prepare import _resolve

    hook = getattr(BACKBONES.get(cfg.backbone.name), "select_style", None)
    if hook is not None:
        return hook(cfg.backbone, style)
    return cfg.backbone, _resolve(style if style is not None else cfg.data.style)


def stylize_video(cfg, video, out, style: Optional[str] = None, policy=None, size: Optional[int] = None,
                  chunk: int = 16, max_frames: Optional[int] = None, device=None) -> dict:
    """Stylize ``video`` into the mp4 ``out`` (see the module doc); returns what was written."""
    from vstlib.backbones import make_backbone
    from vstlib.video.io import load_image

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError("output must be an .mp4 file", out, "pass --out something.mp4")
    if chunk < 1:
        raise InputError(f"chunk must be >= 1 frames, got {chunk}")
    if max_frames is not None and max_frames < 2:
        raise InputError(f"--max-frames {max_frames}: video style transfer needs 2 or more frames",
                         fix="pass --max-frames 2 or more (or leave it out)")
    device = torch.device(device if device is not None else cfg.train.device)
    cfg_bb, style_path = resolve_style(cfg, style)
    try:
        # the profile's data.resize: "fit" crops it square (cpu, smoke), "short_side" keeps it whole (paper)
        style_img = load_image(style_path, cfg_bb.resolution or cfg.data.size, cfg.data.resize).to(device)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds; the user needs one line
        raise InputError(f"unreadable style image ({type(err).__name__})", style_path,
                         "pass a PNG or JPEG image") from None
    fps, total = _video_meta(video)
    short = size or cfg.backbone.resolution or cfg.data.size
    chunks = frame_chunks(video, short, chunk, max_frames)
    first = next(chunks, None)
    if first is not None and len(first) < 2:                               # chunk=1: a pair to start from
        nxt = next(chunks, None)
        first = first if nxt is None else torch.cat([first, nxt])
    if first is None or len(first) < 2:
        raise InputError("video has fewer than 2 frames", video, "pass a longer clip")
    h, w = first.shape[-2:]
    backbone = make_backbone(dataclasses.replace(cfg_bb, resolution=min(h, w)), device, None)
    if policy is not None:
        if cfg.policy.latent_channels != backbone.latent_channels:
            raise InputError(f"policy.latent_channels={cfg.policy.latent_channels} but backbone "
                             f"{cfg_bb.name!r} has {backbone.latent_channels}-channel latents",
                             fix="pass a policy trained on this profile")
        policy = policy.to(device).eval()
    flows_fn = _flows_fn(cfg.flow)

    def all_chunks():
        yield first
        yield from chunks

    total = min(total, max_frames) if total and max_frames else total
    bar = progress(None, desc=f"stylize {Path(video).name}", total=total, unit="frame")
    with Mp4Writer(out, fps) as writer:
        for images in stylized_chunks(backbone, all_chunks(), style_img, policy, device, flows_fn):
            writer.write(images)
            bar.update(len(images))
    bar.close()
    return {"path": out, "frames": writer.n, "height": h, "width": w, "fps": fps,
            "style_net": getattr(cfg_bb, "style_net", None), "policy": policy is not None}


__all__ = ["aspect_size", "frame_chunks", "latent_chunks", "stylized_chunks", "stylize_video", "resolve_style",
           "Mp4Writer"]
