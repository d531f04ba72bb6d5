"""Engines: the generators whose latent the drag loop edits (GAN now; diffusion in a later release)."""

from .gan import DCGANGenerator, GANEngine, load_generator

__all__ = ["DCGANGenerator", "GANEngine", "load_generator"]
