"""dragkit: drag-based image editing, every method a composition of small parts over one shared drag loop."""

__version__ = "0.1.0"

from .errors import DragkitError, InputError, ModelError, ParameterError  # noqa: E402
from .loop import DragContext, FeatureOutput, drag_loop  # noqa: E402
from .methods import METHODS, Method, get_method  # noqa: E402
from .pipelines import DragGANPipeline, GANSample  # noqa: E402
from .types import DragRequest, DragResult  # noqa: E402

__all__ = [
    "METHODS",
    "DragContext",
    "DragGANPipeline",
    "DragRequest",
    "DragResult",
    "DragkitError",
    "FeatureOutput",
    "GANSample",
    "InputError",
    "Method",
    "ModelError",
    "ParameterError",
    "__version__",
    "drag_loop",
    "get_method",
]
