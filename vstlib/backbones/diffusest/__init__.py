"""DiffuseST (Hu et al., 2024) on BLIP-Diffusion, split by job.

components  what a pipeline is built from (modules + SD's DDIM schedule)
tiny        the random tiny twin (smoke profile, tests; no download)
hub         the real ``Salesforce/blipdiffusion`` weights
blip        the context CLIP text encoder and the Q-Former: style prompt embeddings
injection   content/style feature injection in the UNet, and its schedule
sampler     DDIM inversion and sampling
pipeline    :class:`DiffuseST`, the backbone (stylize, policy_latents, render)
"""
from vstlib.backbones.diffusest.pipeline import DiffuseST, DiffuseSTOutput, StyleContext
from vstlib.backbones.diffusest.sampler import Inversion

__all__ = ["DiffuseST", "DiffuseSTOutput", "StyleContext", "Inversion"]
