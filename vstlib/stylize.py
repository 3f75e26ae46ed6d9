"""``vst stylize``: any video, any length, any aspect ratio, streamed in chunks of frames.

    info = stylize_video(cfg, "in.mp4", "out.mp4", style=None, policy=None, size=None, chunk=16)

Memory stays bounded by one chunk (a 4K or 5-minute clip is read, resized, stylized and written
chunk by chunk). Frames keep the input's aspect ratio: short side = ``size`` (default the
profile's), both sides rounded to multiples of 8, never a centre crop, resized by the same
``video.resize.resize_uint8`` as prepared clips (the policy sees frames prepared as in training).
The policy acts through ``rl.step.unroll``, the step training and evaluation use; the last frame,
latent and output latent of a chunk are carried into the next, so chunking never changes the frames.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import av
import torch

from vstlib.backbones import BACKBONES, make_backbone
from vstlib.errors import InputError, require_file
from vstlib.executors import run_jobs
from vstlib.files import atomic_path
from vstlib.flow import FLOW_ESTIMATORS, latent_flow
from vstlib.rl.checkpoint import load_policy
from vstlib.rl.step import LatentClip, render, unroll, uses_flow
from vstlib.runtime import progress
from vstlib.video.cuts import CUT_THRESHOLD, cuts
from vstlib.video.io import iter_frames, load_image, save_png, to_tensor, to_uint8
from vstlib.video.prepare import resolve_path
from vstlib.video.resize import resize, resize_uint8


def frame_chunks(video, short: int, chunk: int = 16, max_frames: Optional[int] = None) -> Iterator[torch.Tensor]:
    """Stream a video as float chunks (n,3,H,W) in [0,1], each frame resized like a prepared clip's."""
    buf, n = [], 0
    for frame in iter_frames(video):                                       # (h,w,3) uint8
        buf.append(to_tensor(resize_uint8(frame, short, "short_side"))[None])   # (1,3,H,W)
        n += 1
        if len(buf) == chunk:
            yield torch.cat(buf)
            buf = []
        if max_frames is not None and n >= max_frames:
            break
    if buf:
        yield torch.cat(buf)


@torch.no_grad()
def stylized_chunks(backbone, chunks: Iterable[torch.Tensor], style: torch.Tensor, policy=None,
                    device=None, flows_fn: Optional[Callable] = None,
                    cut_threshold: Optional[float] = CUT_THRESHOLD) -> Iterator[torch.Tensor]:
    """Yields the stylized frames (n,3,H,W) in [0,1] of each chunk: the stylizer's own frames, or
    with ``policy`` its mean action from the video's frame 1 on. ``flows_fn(frames (m,3,H,W))``
    gives the input's flows for a policy that observes them. At a shot cut of the input
    (``video.cuts``; ``cut_threshold`` None: never) the policy's state restarts, as at frame 0."""
    if policy is not None and uses_flow(policy) and flows_fn is None:
        raise ValueError("a policy with observation='flow' needs flows_fn")
    carry = None                                     # (frame (1,3,H,W), L (1,C,h,w), L^out (1,C,h,w)) of the last frame
    # with a policy, a backbone that can skip its decoder decodes each frame once, after its action
    lean = policy is not None and getattr(backbone, "lazy_decode", False)
    for frames in chunks:
        frames = frames.to(device) if device is not None else frames
        parts = [frames]
        if policy is not None and cut_threshold is not None:              # split at cuts: each shot starts afresh
            x = frames if carry is None else torch.cat([carry[0], frames])
            at = [t - (len(x) - len(frames)) for t in cuts(x, cut_threshold)]   # cut before frames[t]
            bounds = [0, *at, len(frames)]
            parts = [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        out_parts = []
        for k, part in enumerate(parts):
            if k > 0:
                carry = None                                               # a new shot
            if len(part):                                                  # empty: a cut before frames[0]
                images, carry = _stylize_part(backbone, part, style, policy, flows_fn, carry, lean)
                out_parts.append(images)
        images = torch.cat(out_parts)
        if images.shape[-2:] != frames.shape[-2:]:                         # square-only backbones
            images = resize(images, frames.shape[-2:])
        yield images.clamp(0, 1)


def _stylize_part(backbone, frames, style, policy, flows_fn, carry, lean):
    """One run of frames of one shot after ``carry`` (None: the shot's first frame is among them):
    (their stylized frames (n,3,H',W'), the new carry)."""
    out = backbone.stylize(frames, style, decode=False) if lean else backbone.stylize(frames, style)
    images = None if lean else out.images.float()                          # (n,3,H',W')
    if policy is None:
        return images, None
    L = backbone.policy_latents(out).float()                               # (n,C,h,w)
    x = frames if carry is None else torch.cat([carry[0], frames])         # (m,3,H,W): the run after its past
    Lx = L if carry is None else torch.cat([carry[1], L])
    if len(Lx) == 1:                                                       # a shot's first frame alone: N(I_0)
        return (render(backbone, out, L, 0) if lean else images), (frames[-1:], L[-1:], L[-1:])
    clip = LatentClip(Lx, *latent_flow(flows_fn(x), *L.shape[-2:])) if uses_flow(policy) else LatentClip(Lx)
    u = unroll(policy, clip, "mean", out_prev=None if carry is None else carry[2])
    if carry is not None:                                                  # every frame of the run acted on
        images = render(backbone, out, u.out[0], 0)
    elif lean:                                                             # frame 0 is N(I_0): decoded with the rest
        images = render(backbone, out, torch.cat([L[:1], u.out[0]]), 0)
    else:
        images = torch.cat([images[:1], render(backbone, out, u.out[0], 1)])
    return images, (frames[-1:], L[-1:], u.out[0, -1:])


def _flows_fn(cfg_flow) -> Callable:
    """Flows of a user's video for a flow-aware policy: the profile's estimator, or OpenCV DIS
    where the profile's flows only exist for synthetic clips ("exact")."""
    cfg_flow = cfg_flow if cfg_flow.source != "exact" else dataclasses.replace(cfg_flow, source="dis")
    estimate = FLOW_ESTIMATORS.pick(cfg_flow.source)
    return lambda frames: estimate(frames, cfg_flow, masks=("bw",))        # what latent_flow reads


def _video_meta(video) -> tuple[float, Optional[int]]:
    """(fps, frame count or None) of a video; 10 fps for folders of frames / unknown rates."""
    try:
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate or s.base_rate or 0)
            n = int(s.frames) or None
    except Exception:  # noqa: BLE001 - folders of frames, GIFs, odd containers: defaults
        return 10.0, None
    return (fps if 0 < fps < 1000 else 10.0), n


class Mp4Writer:
    """H.264 mp4 (yuv420p) at the input's frame rate and quality ``crf`` (x264's constant rate factor:
    0 lossless luma, 23 x264's default, higher smaller), written chunk by chunk, renamed into place
    on success."""

    def __init__(self, path: Path, fps: float, crf: int = 23):
        self.path, self.fps, self.crf = Path(path), fps, crf

    def __enter__(self):
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._c = av.open(str(tmp), "w", format="mp4")
        self._s = self._c.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        self._s.pix_fmt = "yuv420p"
        self._s.options = {"crf": str(self.crf)}
        self.n = 0
        return self

    def write(self, images: torch.Tensor) -> None:
        """images (n,3,H,W) in [0,1] (H, W even)."""
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


class FrameFolderWriter:
    """Lossless PNG frames 00000.png, 00001.png, ... written into a hidden folder beside ``path`` and
    renamed into place on success (a crash never leaves a partial folder of frames)."""

    def __init__(self, path: Path, fps: float = 0.0):
        self.path, self.fps = Path(path), fps

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self.n = 0
        return self

    def write(self, images: torch.Tensor) -> None:
        for a in to_uint8(images):                                         # (H,W,3) uint8
            save_png(self.tmp / f"{self.n:05d}.png", a)
            self.n += 1

    def __exit__(self, *exc):
        if exc[0] is None:
            if self.path.exists():                                         # checked empty before any work
                self.path.rmdir()
            os.replace(self.tmp, self.path)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def resolve_style(cfg, style: Optional[str]):
    """(backbone config, style image path) for ``--style``; a backbone may map names to its own
    networks (``select_style`` classmethod, e.g. faststyle's wave|udnie|scream|wreck)."""
    hook = getattr(BACKBONES.get(cfg.backbone.name), "select_style", None)
    if hook is not None:
        return hook(cfg.backbone, style)
    return cfg.backbone, resolve_path(style if style is not None else cfg.data.style)


def stylize_video(cfg, video, out, style: Optional[str] = None, policy=None, size: Optional[int] = None,
                  chunk: int = 16, max_frames: Optional[int] = None, device=None, crf: int = 23,
                  cut_threshold: Optional[float] = CUT_THRESHOLD) -> dict:
    """Stylize ``video`` (a file or a folder of frames) into ``out``: an mp4 (quality ``crf``) or,
    for a name without a suffix, a folder of lossless PNG frames (see the module doc); returns what
    was written."""
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ""):
        raise InputError("output must be an .mp4 file or a folder name (no suffix) for PNG frames", out,
                         "pass --out something.mp4 or --out frames_folder")
    if not 0 <= crf <= 51:
        raise InputError(f"--crf {crf}: x264's quality runs from 0 (best) to 51", fix="pass --crf 0..51 (default 23)")
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
    writer = Mp4Writer(out, fps, crf) if out.suffix else FrameFolderWriter(out, fps)
    with writer:
        for images in stylized_chunks(backbone, all_chunks(), style_img, policy, device, flows_fn, cut_threshold):
            writer.write(images)
            bar.update(len(images))
    bar.close()
    return {"path": out, "frames": writer.n, "height": h, "width": w, "fps": fps,
            "style_net": getattr(cfg_bb, "style_net", None), "policy": policy is not None}


# what `--video` names as one of several videos (a folder's other entries are ignored)
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


def video_inputs(videos: Sequence[str]) -> Optional[list[Path]]:
    """The videos of ``--video`` when it names several: more than one path, a glob pattern
    (``'clips/*.mp4'``, quoted: vst expands it) or a folder holding video files; None when it
    names one video (a video file, or a folder of frames)."""
    if len(videos) > 1:                                                    # the shell expanded a pattern
        return [Path(v) for v in videos]
    spec, p = videos[0], Path(videos[0]).expanduser()
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
        return found or None
    if not p.exists() and glob.has_magic(spec):
        found = sorted(Path(q) for q in glob.glob(str(p), recursive=True) if Path(q).is_file())
        if not found:
            raise InputError("no file matches this pattern", p, "check the pattern, e.g. --video 'clips/*.mp4'")
        return found
    return None


def stylize_job(job: tuple) -> dict:
    """One video of ``stylize_many``: (config, video, output, policy file or None, stylize_video's options)."""
    cfg, video, out, policy_file, options = job
    device = options.get("device") or cfg.train.device
    policy = load_policy(policy_file, cfg.policy, device) if policy_file else None
    return stylize_video(cfg, video, out, policy=policy, **options)


def stylize_many(cfg, videos: Sequence[Path], out_dir, policy_file=None, executor: Optional[str] = None,
                 **options) -> tuple[list[dict], list[Path]]:
    """Stylize each video into ``out_dir/<its name>.mp4`` on ``executor`` (default ``compare.executor``),
    one job per video; an output that exists is finished (written atomically) and skipped, so a
    rerun redoes only what is missing. Returns (what each new output holds, the outputs skipped)."""
    out_dir = Path(out_dir)
    outs = [out_dir / f"{Path(v).stem}.mp4" for v in videos]
    seen: dict = {}
    for v, o in zip(videos, outs):
        if o in seen:
            raise InputError(f"two inputs would write the same output {o.name} ({seen[o]} and {v})", v,
                             "give the videos distinct names (before their suffix)")
        seen[o] = v
    for v in videos:
        require_file(v, "input video", "pass existing videos with --video")
    todo = [(cfg, Path(v), o, policy_file, options) for v, o in zip(videos, outs) if not o.exists()]
    done = run_jobs(executor or cfg.compare.executor, stylize_job, todo, desc="videos")
    return done, [o for o in outs if all(o != job[2] for job in todo)]


__all__ = ["frame_chunks", "stylized_chunks", "stylize_video", "resolve_style", "Mp4Writer", "FrameFolderWriter",
           "video_inputs", "stylize_many", "stylize_job", "VIDEO_SUFFIXES"]
