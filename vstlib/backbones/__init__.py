"""Backbones: per-frame stylizers with a latent the policy acts on (see base.py)."""
