"""Small shared pieces: clear errors, atomic writes, seeding, progress bars, devices, pixels.

One copy of each: ``to_uint8`` / ``save_png`` / ``save_frames`` (pixels to disk), ``fork_rng``
(a seeded build that leaves the global RNG alone), ``resolve_device`` (entry points only).
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np


# --------------------------------------------------------------------------- errors
class VstError(Exception):
    """A user-facing error: one line naming the file (if any) and the fix.

    The CLI prints ``str(err)`` and exits non-zero, without a traceback.
    """

    def __init__(self, message: str, path: Optional[os.PathLike] = None, fix: Optional[str] = None):
        self.path = Path(path) if path is not None else None
        self.fix = fix
        parts = [f"{self.path}: {message}" if self.path is not None else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class InputError(VstError):
    """Bad user input: unreadable video, one-frame clip, missing file, NaN..."""


class MissingWeightsError(VstError):
    """Pretrained weights are neither cached nor downloadable (offline)."""


def require_file(path: os.PathLike, what: str = "file", fix: Optional[str] = None) -> Path:
    """Return ``Path(path)`` or raise an InputError naming it."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found", p, fix or "check the path")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{what} is empty (0 bytes)", p, fix or "re-export or re-download it")
    return p


def check_output_path(path: os.PathLike, exts: Iterable[str] = (".mp4",), what: str = "output") -> Path:
    """Refuse an output path before any work: a known extension, not a folder, a writable parent.

    Returns the absolute path (relative paths are read from the current folder).
    """
    p = Path(path).expanduser().absolute()
    exts = tuple(e.lower() for e in exts)
    if p.is_dir():
        raise InputError(f"{what} is an existing folder", p, f"pass a file name, e.g. {p / ('out' + exts[0])}")
    if p.suffix.lower() not in exts:
        raise InputError(f"{what} must end in {' or '.join(exts)}", p, f"pass a file name ending in {exts[0]}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:                   # atomic_path creates the rest
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} folder {parent} is a file", p, "pick another output folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"{what} is not writable (no permission on {parent if not p.exists() else p})", p,
                         "pick a folder you can write to, or fix its permissions")
    return p


def os_error_line(err: OSError) -> str:
    """One line for an OSError (full disk, permission, ...): what failed, on which file."""
    name = err.filename if err.filename is not None else None
    what = err.strerror or type(err).__name__
    return f"{name}: {what}" if name else what


# --------------------------------------------------------------------------- atomic IO
@contextmanager
def atomic_path(path: os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A crash mid-write leaves the previous file intact (never a half-written one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes 0600 files: give the result the mode a plain open() would (or the old file's)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_npz(path: os.PathLike, **arrays: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def atomic_save_tensors(path: os.PathLike, tensors: dict, metadata: Optional[dict] = None) -> Path:
    """safetensors file, written atomically (no pickle on load)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def aspect_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(H, W) for an h x w image with the short side ~= ``short``, aspect ratio kept, BOTH sides
    rounded to the nearest multiple of 8 (SD's VAE and the TAEF2 latent are 1/8 of the image;
    the short side is ``short`` itself when that is a multiple of 8, the long side moves by at
    most 4 px, i.e. the aspect ratio changes by under 4/short). Square in, square out."""
    s = max(8, int(round(short / 8)) * 8)
    scale = s / min(h, w)
    rnd = lambda v: max(8, int(round(v * scale / 8)) * 8)                 # noqa: E731
    return (s, rnd(w)) if h <= w else (rnd(h), s)


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


def load_tensors(path: os.PathLike, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    return load_file(str(require_file(path, "tensor file")), device=device)


def append_jsonl(path: os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (logs survive a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: ignore it
                continue
    return out


# --------------------------------------------------------------------------- seeding, devices
def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name="auto"):
    """``"auto"`` -> cuda if available, else cpu. Called once, at the entry points."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fork_rng(device=None):
    """``torch.random.fork_rng`` over the CPU and (if any) the CUDA device of ``device``.

    Seeded builds (random smoke networks) run inside it: the caller's RNG stream is untouched.
    """
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [])


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


# --------------------------------------------------------------------------- progress
def progress_enabled() -> bool:
    """tqdm bars on, except under nbval / papermill / ``VSTLIB_PROGRESS=0``.

    Notebook regression tests compare outputs; bars would add stderr noise.
    """
    flag = os.environ.get("VSTLIB_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    if "ipykernel" in sys.modules or "nbval" in sys.modules:
        return False
    return True


def progress(iterable: Iterable, desc: str = "", total: Optional[int] = None, **kw):
    from tqdm import tqdm  # not tqdm.auto: its notebook flavour warns without ipywidgets

    return tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(), leave=False,
                dynamic_ncols=True, **kw)


# --------------------------------------------------------------------------- weights
def hf_offline_hint(model_ids: Iterable[str]) -> str:
    # one command per repository: `hf download A B` would read B as a file of A
    cmds = " and ".join(f"`hf download {i}`" for i in model_ids) or "the weights"
    return (f"download once with network: {cmds} (cached under "
            f"$HF_HOME, default ~/.cache/huggingface), or run `vst download-weights`; "
            f"or use the smoke profile")


@contextmanager
def weights_guard(what: str, model_ids: Iterable[str] = (), fix: Optional[str] = None):
    """Turn a failed weight download/load into one MissingWeightsError.

    Wrap every pretrained load: offline, hub and torch.hub raise a zoo of exceptions
    (OSError, URLError, LocalEntryNotFoundError, ...) after long retries; the user needs
    one sentence saying what to download and where.
    """
    try:
        yield
    except MissingWeightsError:
        raise
    except (OSError, ConnectionError, RuntimeError, ValueError) as err:  # noqa: PERF203
        text = str(err).lower()
        netty = any(k in text for k in ("connect", "offline", "resolve", "download", "internet",
                                        "not found", "no such file", "urlopen", "network",
                                        "couldn't", "cannot find", "does not appear", "local"))
        if isinstance(err, (OSError, ConnectionError)) or netty:
            raise MissingWeightsError(
                f"pretrained weights for {what} are not available offline ({type(err).__name__})",
                fix=fix or hf_offline_hint(model_ids)) from None
        raise


def torch_hub_checkpoint(filename: str) -> Path:
    """Where torchvision caches a weight file (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_torchvision_weights(weights, what: str):
    """``weights.get_state_dict`` with an offline check: one clear error instead of a traceback."""
    fname = Path(weights.url).name
    cached = torch_hub_checkpoint(fname)
    fix = (f"download {weights.url} to {cached} (e.g. `vst download-weights` with network, "
           f"or copy the file there); or use the smoke profile")
    if not cached.exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise MissingWeightsError(f"{what} weights {fname} are not cached", cached, fix)
    was_cached = cached.exists()
    try:
        with weights_guard(what, fix=fix):
            return weights.get_state_dict(progress=progress_enabled(), check_hash=False)
    except (RuntimeError, EOFError, ValueError, MissingWeightsError) as err:
        if not was_cached:
            raise
        # a truncated or damaged cached file: torch.load's PytorchStreamReader / unpickling error
        raise VstError(f"cached {what} weights {fname} are damaged or truncated "
                       f"({type(err).__name__}: {' '.join(str(err).split())[:120]})", cached,
                       f"delete {cached} and download it again (`vst download-weights`, or copy the file "
                       f"from {weights.url})") from None
