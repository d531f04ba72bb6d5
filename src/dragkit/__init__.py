"""dragkit: drag-based image editing, every method a composition of small parts over one shared drag loop."""

from .core import __version__
from .core.errors import DragkitError, InputError, ModelError, OutputError, ParameterError  # noqa: F401
from .core.loop import DragContext, FeatureOutput, drag_loop
from .core.types import DragRequest, DragResult
from .methods import METHODS, Method, get_method
from .pipelines import DragGANPipeline, GANSample

__all__ = [
    "METHODS",
    "DragContext",
    "DragDiffusionPipeline",
    "DragGANPipeline",
    "DragRequest",
    "DragResult",
    "DragkitError",
    "FeatureOutput",
    "GANSample",
    "InputError",
    "LucidDragPipeline",
    "Method",
    "ModelError",
    "ParameterError",
    "__version__",
    "drag_loop",
    "get_method",
]


def __getattr__(name: str):
    if name in ("DragDiffusionPipeline", "LucidDragPipeline"):  # imported on first use: diffusers takes seconds
        from .pipelines import diffusion

        return getattr(diffusion, name)
    raise AttributeError(name)
