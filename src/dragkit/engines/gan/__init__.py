"""The GAN engine: a generator, its latent (or an intermediate activation), features from any block, inversion."""

from .engine import BUNDLED, DCGANGenerator, GANCode, GANEngine, GANInversion, load_generator, psnr

__all__ = ["BUNDLED", "DCGANGenerator", "GANCode", "GANEngine", "GANInversion", "load_generator", "psnr"]
