"""Per-frame stylizers behind one interface (``base.py``); ``cfg.backbone.name`` picks one.

    from vstlib.backbones import make_backbone
    bb = make_backbone(cfg.backbone, device, paths.cache_dir(cfg.profile) / "backbone")
    out = bb.stylize(frames, style)

Importing this package registers every implementation in :data:`BACKBONES`.
"""
from .base import BACKBONES, Backbone, BaselineOutput, make_backbone, register
from .diffusest import DiffuseST  # noqa: F401  (registers "diffusest")
from .faststyle import FastStyle  # noqa: F401  (registers "faststyle")
from .microast import MicroASTBackbone  # noqa: F401  (registers "microast")

__all__ = ["BACKBONES", "Backbone", "BaselineOutput", "make_backbone", "register", "DiffuseST", "FastStyle", "MicroASTBackbone"]
