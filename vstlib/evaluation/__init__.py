"""The judge. An evaluation the method cannot game (Lai et al. 2018's protocol): metrics computed with what the
method never sees in training or inference (a different flow estimator: Farneback, not DIS), paired
bootstrap statistics against the per-frame reference, and Bonneel et al. 2015's blind temporal
consistency as an independent baseline.

- ``metrics``: warping errors (short and long term), MS-SSIM fidelity, sharpness, perceptual fidelity,
  edge correlation;
- ``stats``: paired cluster bootstrap and the per-(method, setting, style group) summary;
- ``bonneel``: Bonneel et al. 2015 by a screened Poisson solve per frame (preconditioned CG in torch).
"""
