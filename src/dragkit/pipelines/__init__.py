"""Python API: pipeline objects in the diffusers style (``from_pretrained``, ``.to``, one ``__call__``).

``DragDiffusionPipeline`` and ``LucidDragPipeline`` are imported on first use (diffusers takes seconds to import).
"""

from typing import Any

from .gan import DragGANPipeline, GANSample
from .identity import IdentityPipeline

__all__ = [
    "DragDiffusionPipeline",
    "DragGANPipeline",
    "GANSample",
    "IdentityPipeline",
    "LucidDragPipeline",
    "load_pipeline",
]


def load_pipeline(engine: str, model: str | None = None, device: str = "cpu", dtype: Any = None, quiet: bool = False):
    """The pipeline for a method's ``engine`` on ``device``: ``model`` (default: the engine's) in ``dtype``."""
    if engine == "identity":
        return IdentityPipeline()
    if engine == "gan":
        return DragGANPipeline.from_pretrained(model or "dcgan-faces").to(device)
    from .diffusion import DEFAULT_MODEL, DragDiffusionPipeline

    if quiet:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # its "Loading pipeline components" bar
    kwargs = {} if dtype is None else {"dtype": dtype}
    pipe = DragDiffusionPipeline.from_pretrained(model or DEFAULT_MODEL, **kwargs).to(device)
    pipe.set_progress_bar_config(disable=True if quiet else None, leave=False)
    return pipe


def __getattr__(name: str) -> Any:
    if name in ("DragDiffusionPipeline", "LucidDragPipeline"):
        from . import diffusion

        return getattr(diffusion, name)
    raise AttributeError(name)
