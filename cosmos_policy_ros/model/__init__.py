"""Cosmos Policy model core: latent layout, normalization, sampler, denoiser backends,
checkpoint folder, conversion from the official checkpoints and the ``Policy``."""
