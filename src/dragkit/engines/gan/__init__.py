"""The GAN engine: a generator, its latent (or an intermediate activation), features from any block, inversion.
Two generator families: the DCGAN (:class:`GANEngine`, the bundled faces) and StyleGAN2 (:class:`StyleGANEngine`,
NVIDIA's ``.pkl`` files read safely)."""

from __future__ import annotations

import os

from .engine import BUNDLED, DCGANGenerator, GANCode, GANEngine, GANInversion, load_generator, psnr
from .style_engine import StyleGANEngine, is_stylegan_path, load_stylegan, save_stylegan


def load_engine(name_or_path: str | os.PathLike = BUNDLED) -> GANEngine | StyleGANEngine:
    """The engine for a generator: a StyleGAN2 ``.pkl`` or dragkit-layout folder (:class:`StyleGANEngine`), else
    ``"dcgan-faces"`` or DCGAN weights (:class:`GANEngine`)."""
    if str(name_or_path) != BUNDLED and is_stylegan_path(name_or_path):
        return StyleGANEngine.from_pretrained(name_or_path)
    return GANEngine.from_pretrained(name_or_path)


__all__ = [
    "BUNDLED",
    "DCGANGenerator",
    "GANCode",
    "GANEngine",
    "GANInversion",
    "StyleGANEngine",
    "is_stylegan_path",
    "load_engine",
    "load_generator",
    "load_stylegan",
    "psnr",
    "save_stylegan",
]
