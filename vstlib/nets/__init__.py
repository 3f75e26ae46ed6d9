"""Real pretrained networks loaded from the vendored assets (vstlib/assets): our own torch modules.

- :mod:`.faststyle`: Johnson/Engstrom fast style-transfer networks (wave, udnie, scream, wreck);
- :mod:`.taef2`: TAEF2 tiny autoencoder (FLUX.2 latent space, 32 channels at 1/8);
- :mod:`.darknet`: Darknet-tiny ImageNet classifier, a perceptual feature network.
"""
