"""What a driver receives and returns: the prepared edit (:class:`DiffusionEdit`), one :class:`Outcome` per result,
and the registry of drivers (:class:`Driver`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ...core.errors import ParameterError
from ...core.geometry import GridMap
from ...core.loop import DragLoopOutput
from ...core.types import DragRequest
from ...engines.diffusion import DiffusionEngine, Embeds, Records
from ...utils.profiler import StageProfiler


@dataclass(kw_only=True)
class DiffusionEdit:
    """One edit as the pipeline prepared it for a driver: everything up to the inverted latent.

    ``latent`` is the inverted ``z_t`` at ``timesteps[start]`` (``timestep``); ``handles``/``targets`` are ``(row,
    col)`` on the supervision ``grid`` (``grid_map`` maps them back to image pixels) and ``mask`` is the editable
    region there (1 = may change) or ``None``. ``source`` holds the source branch's inputs to the ``mutual`` layers
    when they need not be recomputed (``source_kv=inversion``, or a ``source_cache`` hit); ``cache_key`` is where
    the source is kept once sampled (``source_cache``), ``None`` when it is not, and ``cache_hit`` says the source
    came from there. ``info`` collects the facts every result reports. Built by field name only (``kw_only``).
    """

    engine: DiffusionEngine
    request: DragRequest
    method: str
    params: dict[str, Any]
    embeds: Embeds
    image: Tensor
    latent: Tensor
    start: int
    timestep: Tensor
    grid: tuple[int, int]
    grid_map: GridMap
    handles: Tensor
    targets: Tensor
    mask: Tensor | None
    mutual: list[str]
    source: Records | None
    cache_key: tuple | None
    cache_hit: bool
    info: dict[str, Any]
    prof: StageProfiler
    callback: Callable[[dict[str, Any]], None] | None = None
    cancel: Callable[[], bool] | None = None
    progress: bool = True
    record_frames: int = 0  # every this many drag steps (and the last) a preview in ``frames`` and the callback's
    frames: list[tuple[int, Any]] = field(default_factory=list)  # (step, PIL image) previews of the drag

    @property
    def points(self) -> tuple[Tensor, Tensor]:
        return self.handles, self.targets

    @property
    def source_image(self) -> Tensor:
        """The input image at the working size, ``(1, 3, H, W)`` in [0, 1]."""
        return (self.image.float() / 2 + 0.5).clamp(0, 1)


@dataclass
class Outcome:
    """One result of a driver: the edited latent to decode, the drag loop's output (a stand-in with no steps when
    nothing was optimized) and the facts this result reports on top of the edit's; ``image``, when a driver makes
    the picture itself (Inpaint4Drag's composite), at the working size, instead of the latent's decoding."""

    latent: Tensor
    loop: DragLoopOutput
    info: dict[str, Any] = field(default_factory=dict)
    image: Any = None


@dataclass(frozen=True)
class Driver:
    """A registered driver: its function, what it is, the typed options it accepts beyond the parameters (``None``:
    none), whether its sampling reads the source branch beyond the mutual layers' inputs (then the source can be
    neither read from the inversion, ``source_kv=inversion``, nor kept, ``source_cache``), and whether it starts from
    the inverted latent (``inverts``; without, the pipeline neither trains a LoRA nor inverts, and ``latent`` is the
    image's encoding)."""

    name: str
    run: Callable[[DiffusionEdit, Any], list[Outcome]]
    summary: str
    options: type | None = None
    reads_source_branch: bool = False
    inverts: bool = True


DRIVERS: dict[str, Driver] = {}


def register_driver(driver: Driver) -> Driver:
    DRIVERS[driver.name] = driver
    return driver


def get_driver(name: str) -> Driver:
    return DRIVERS[name]  # the ``sampler`` parameter's choices are DRIVERS' keys: a resolved name is registered


def check_options(driver: Driver, options: Any, method: str) -> None:
    """Options only for the driver that takes them, of its type."""
    if options is None:
        return
    if driver.options is None or not isinstance(options, driver.options):
        raise ParameterError(
            f"{type(options).__name__}: only for methods whose sampler takes them; {method} uses sampler={driver.name}"
        )
