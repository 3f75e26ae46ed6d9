"""Per-frame stylizers behind one interface (``base.py``); ``cfg.backbone.name`` picks one.

    from vstlib.backbones import make_backbone
    bb = make_backbone(cfg.backbone, device, paths.cache_dir(cfg.profile) / "backbone")
    out = bb.stylize(frames, style)

Importing this package registers every implementation in :data:`BACKBONES`.
"""
from vstlib.backbones.base import (
    BACKBONES,
    Backbone,
    BaselineOutput,
    make_backbone,
    register,
)
from vstlib.backbones.diffusest import DiffuseST
from vstlib.backbones.faststyle import FastStyle
from vstlib.backbones.microast import MicroASTBackbone

__all__ = ["BACKBONES", "Backbone", "BaselineOutput", "make_backbone", "register", "DiffuseST", "FastStyle", "MicroASTBackbone"]
