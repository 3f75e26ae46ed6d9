"""OpenCV's DIS optical flow: kept as an import path; the code lives in :mod:`vstlib.flow`
(``flow.dis_flow``, registered as ``cfg.flow.source = "dis"``)."""
from __future__ import annotations

from .flow import DIS_PRESETS as PRESETS, dis_flow

__all__ = ["dis_flow", "PRESETS"]
