"""vstlib: video style transfer with reinforcement learning.

A small conv policy perturbs DiffuseST's per-frame latents so that stylized frames agree
along the optical flow of the original video. See README.md for the two entry points
(`make reproduce`, `make test`) and `vstlib.config` for the presets.
"""
__version__ = "0.1.0"
