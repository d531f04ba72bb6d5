"""The contracts between the shared loops and their parts: what a feature function returns, what the parts of the
drag loop see and do, and what a sampling-time part sees and returns at each denoising step.

Parts implement these protocols (``dragkit.parts``); the drag loop (``dragkit.core.loop``) and the engines call them.
Nothing here knows an engine, a file format or an interface.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor


@dataclass
class FeatureOutput:
    """What a feature function returns for one latent.

    ``features``: ``(1, C, h, w)`` on the supervision grid, differentiable w.r.t. the latent. The optional fields
    are what engine-specific loss terms read, each computed only when a term asks for it:

    - ``denoised``: the one-step DDIM denoise ``x_{t−1}`` of the latent (DragDiffusion's mask term);
    - ``x0_image``: the decoded x0-prediction, ``(1, 3, H, W)`` in [0, 1] (CLIPDrag's CLIP term).
    """

    features: Tensor
    denoised: Tensor | None = None
    x0_image: Tensor | None = None

    def detached(self) -> FeatureOutput:
        """The same output cut from the graph (the loop keeps the step-0 output as the edit's reference)."""
        cut = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in vars(self).items()}
        return FeatureOutput(**cut)


FeatureFn = Callable[[Tensor], FeatureOutput]


@dataclass
class DragContext:
    """Per-edit state the parts share: built by the loop from the first features (or handed to it, so that a
    template can outlive one phase of an edit), read by every part.

    ``initial`` is the feature output at the start of the edit (detached): its ``features`` are ``F₀``, the
    templates of tracking and of initial-template supervision. ``state`` is where a part keeps what it learns
    during one edit (a tracker's filters), keyed by the part's name, so the part objects themselves stay stateless
    and reusable across edits.
    """

    initial: FeatureOutput
    handles0: Tensor
    targets: Tensor
    mask: Tensor | None
    step: int = 0
    confidences: Tensor | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def features0(self) -> Tensor:
        """``F₀``: the initial features, ``(1, C, h, w)``."""
        return self.initial.features

    @classmethod
    def from_features(
        cls, features0: Tensor, handles0: Tensor, targets: Tensor, mask: Tensor | None = None
    ) -> DragContext:
        """A context from initial features alone (parts tested on synthetic feature maps)."""
        return cls(FeatureOutput(features0), handles0, targets, mask)


@dataclass
class TrackResult:
    """New handle positions; optionally a confidence per handle in [0, 1] and ``notes``, JSON-ready per-step facts
    (e.g. which handles a backtracking tracker held back) that the loop copies into the step's trajectory record."""

    handles: Tensor
    confidences: Tensor | None = None
    notes: dict[str, Any] | None = None


@runtime_checkable
class Tracker(Protocol):
    """Finds where each handle's content went after a latent update."""

    def prepare(self, ctx: DragContext) -> None: ...

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult: ...


@runtime_checkable
class Supervision(Protocol):
    """The motion-supervision loss: pulls content at each active handle one step towards its target."""

    def loss(self, features: Tensor, handles: Tensor, active: Tensor, ctx: DragContext) -> Tensor: ...


@runtime_checkable
class LossTerm(Protocol):
    """An extra loss term (e.g. the mask term). ``group`` names the gradient group it belongs to (see fusion)."""

    name: str
    group: str

    def __call__(self, out: FeatureOutput, ctx: DragContext) -> Tensor | None: ...


@runtime_checkable
class Schedule(Protocol):
    """Decides when the loop stops. ``stop_distance``: a handle closer than this to its target has arrived."""

    stop_distance: float

    def should_stop(self, step: int, distances: Tensor, ctx: DragContext) -> str | None: ...


GradientFusion = Callable[[Mapping[str, Tensor], DragContext], Tensor]
"""Combines per-group gradients w.r.t. the latent into one (CLIPDrag's global-local fusion)."""


# ---- sampling-time parts ---------------------------------------------------------------------------------------

GuideKind = Literal["latent", "noise", "direction"]


@dataclass
class GuideStep:
    """What a sampling-time part sees at one denoising step of the edited branch, next to the source branch.

    ``index`` counts the denoising steps of the span being sampled (0 = the first after the drag). ``source`` and
    ``edited`` are both branches' features on the supervision grid from one UNet forward of the batch ``[source,
    edited]``; ``edited`` is differentiable w.r.t. the edited latent. ``x0_image()`` decodes the edited branch's
    x0-prediction (``(1, 3, H, W)`` in [0, 1], differentiable; computed on first use) and ``noise(cond)`` predicts
    the edited branch's noise under other conditioning (``direction`` parts); each is ``None`` where the engine does
    not offer it at that kind of step. A part writes what it wants recorded (JSON numbers) into ``report``.
    """

    index: int
    timestep: Tensor
    source: Tensor | None = None
    edited: Tensor | None = None
    x0_image: Callable[[], Tensor] | None = None
    noise: Callable[[Mapping[str, Tensor]], Tensor] | None = None
    report: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class SamplingGuide(Protocol):
    """A part called at each of the first ``steps`` denoising steps of the edited branch, with both branches.

    What it returns depends on its ``kind``:

    - ``latent``: an energy of the edited latent; before the step denoises, the edited latent takes one fresh Adam
      step of size ``lr`` on it, confined to ``where`` (a 0/1 latent-resolution mask, or ``None``). AdaptiveDrag's
      CLoss.
    - ``noise``: an energy ``E``; the energies of every ``noise`` part are summed and the edited branch's noise
      prediction becomes ``ε + √(1 − ᾱ_t)·∇E`` (classifier guidance on ``p ∝ exp(−E)``). LucidDrag's editing and
      quality guidance.
    - ``direction``: an offset added to the edited branch's noise prediction (after the ``noise`` parts). LucidDrag's
      semantic guidance.

    ``None`` means nothing this step.
    """

    name: str
    kind: GuideKind
    steps: int

    def __call__(self, step: GuideStep) -> Tensor | None: ...


@runtime_checkable
class LatentGuide(SamplingGuide, Protocol):
    """A ``latent`` sampling guide: the size and the region of the Adam step its energy drives."""

    lr: float
    where: Tensor | None
