"""Engines: the generators whose latent the drag loop edits (GAN and diffusion).

Importing this package registers every engine's parameters; diffusers itself is imported only when used.
"""

from . import diffusion
from .gan import DCGANGenerator, GANEngine, load_generator

__all__ = ["DCGANGenerator", "GANEngine", "diffusion", "load_generator"]
