"""User-facing errors: one line naming the file and the fix; checks of input and output paths."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional


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


def check_output_path(path: os.PathLike, exts: Iterable[str] = (".mp4",), what: str = "output",
                      folder: bool = False) -> Path:
    """Refuse an output path before any work: a known extension (or, with ``folder``, a name without
    one: a new or empty folder of frames), a writable parent.

    Returns the absolute path (relative paths are read from the current folder).
    """
    p = Path(path).expanduser().absolute()
    exts = tuple(e.lower() for e in exts)
    if folder and not p.suffix:
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise InputError(f"{what} exists and is not an empty folder", p,
                             "pass a new folder name for the frames (or empty this one)")
    elif p.is_dir():
        raise InputError(f"{what} is an existing folder", p, f"pass a file name, e.g. {p / ('out' + exts[0])}")
    elif p.suffix.lower() not in exts:
        alt = " (or a folder name without a suffix, for PNG frames)" if folder else ""
        raise InputError(f"{what} must end in {' or '.join(exts)}{alt}", p, f"pass a file name ending in {exts[0]}")
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
