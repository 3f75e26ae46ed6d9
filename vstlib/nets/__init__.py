"""Real pretrained networks loaded from the vendored assets (vstlib/assets): our own torch modules.

- :mod:`.faststyle`: Johnson/Engstrom fast style-transfer networks (wave, udnie, scream, wreck);
- :mod:`.taef2`: TAEF2 tiny autoencoder (FLUX.2 latent space, 32 channels at 1/8);
- :mod:`.darknet`: Darknet-tiny ImageNet classifier, a perceptual feature network;
- :mod:`.microast`: MicroAST arbitrary style transfer (any style image; 64-channel latent at 1/4);
- :mod:`.vgg_r31`: the normalised Caffe VGG-19 trunk up to relu3_1 (Gram style and perceptual losses).
"""
