"""Python API: pipeline objects in the diffusers style (``from_pretrained``, ``.to``, one ``__call__``).

``DragDiffusionPipeline`` is imported on first use (diffusers takes seconds to import).
"""

from typing import Any

from .gan import DragGANPipeline, GANSample

__all__ = ["DragDiffusionPipeline", "DragGANPipeline", "GANSample"]


def __getattr__(name: str) -> Any:
    if name == "DragDiffusionPipeline":
        from .diffusion import DragDiffusionPipeline

        return DragDiffusionPipeline
    raise AttributeError(name)
