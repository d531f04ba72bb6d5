"""Python API: pipeline objects in the diffusers style (``from_pretrained``, ``.to``, one ``__call__``)."""

from .gan import DragGANPipeline, GANSample

__all__ = ["DragGANPipeline", "GANSample"]
