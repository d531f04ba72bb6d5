"""AdaptiveDrag's correspondence loss (CLoss) while sampling: the edited latent's features at each target are
pulled toward the source branch's features at its handle (Chen et al. 2024, §3.4).

The pure loss, and :class:`CorrespondenceGuide`, the sampling-time part (a ``latent`` guide, see
:class:`~dragkit.core.protocols.SamplingGuide`) that applies it while sampling (``closs_weight > 0``): at each of
the first ``closs_steps`` denoising steps after the drag, one Adam step (a fresh optimizer, lr ``closs_lr``) on the
edited latent, **carried forward** into that step's denoising (AdaptiveDrag's released code computes it but never
applies it to the latent it samples from).

Two consequences of the paper's "one Adam step" worth knowing. A fresh Adam step is ``lr · sign(gradient)`` per
element, so the weight does not scale the step (any positive weight acts the same; ``closs_lr`` sets its size).
And the gradient reaches every latent element the UNet's receptive field connects to the targets — on faces64
that is the whole image, which then drifts by ``lr`` per step. So when the edit has a mask (the user's or the
automatic one) the step is confined to it, at the latent's resolution: what may not change does not
(measured in docs/adaptivedrag/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from ..core.geometry import inside, patch_offsets, sample
from ..core.params import Param, register
from ..core.protocols import GuideStep

register(
    Param(
        "closs_weight",
        float,
        0.0,
        "CLoss while sampling: weight of the correspondence loss (0 = off; AdaptiveDrag uses 100; a fresh Adam step "
        "is scale-free, so any positive weight acts the same and closs_lr sets the step)",
        "engine:diffusion",
        min=0,
        group="closs",
    ),
    Param(
        "closs_lr", float, 0.01, "CLoss: Adam step size on the edited latent", "engine:diffusion", min=0, group="closs"
    ),
    Param(
        "closs_steps",
        int,
        1000,
        "CLoss: acts on at most this many of the first sampling steps after the drag (default: all)",
        "engine:diffusion",
        min=1,
        group="closs",
    ),
    Param(
        "closs_radius",
        int,
        5,
        "CLoss: radius of the square patches compared, in latent pixels as AdaptiveDrag's code (compared on the "
        "supervision grid: 5 is 20 grid pixels on SD's 256x256 grid, 2 on faces64's 32x32)",
        "engine:diffusion",
        min=0,
        group="closs",
    ),
)


def correspondence_loss(edited: Tensor, source: Tensor, handles: Tensor, targets: Tensor, radius: int) -> Tensor:
    """``Σ_i mean ‖F_edit(t_i + o) − F_src(p_i + o)‖²`` over the square patch offsets ``o`` of ``radius`` whose
    positions lie inside the grid on both sides. ``edited``, ``source``: ``(1, C, h, w)`` features; ``handles``,
    ``targets``: ``(N, 2)`` ``(row, col)`` grid positions. Gradients flow into ``edited`` only."""
    grid = tuple(edited.shape[-2:])
    off = patch_offsets(radius, "square")
    total = edited.new_zeros(())
    for p, t in zip(handles, targets, strict=True):
        qt, qp = t + off, p + off
        keep = inside(qt, grid) & inside(qp, grid)
        if keep.any():
            total = total + (sample(edited, qt[keep]) - sample(source.detach(), qp[keep])).pow(2).mean()
    return total


@dataclass(frozen=True)
class CorrespondenceGuide:
    """CLoss as a sampling-time part: the energy ``weight · CLoss`` of the edited branch's features at the targets
    against the source branch's at the handles; the engine takes one fresh Adam step of size ``lr`` on the edited
    latent before each of the first ``steps`` denoising steps, confined to ``where`` (the editable region at the
    latent's resolution, or ``None``)."""

    weight: float
    lr: float
    steps: int
    radius: int
    handles: Tensor
    targets: Tensor
    where: Tensor | None = None
    name: str = "closs"
    kind: Literal["latent"] = "latent"

    @classmethod
    def from_params(
        cls, p: Mapping[str, Any], handles: Tensor, targets: Tensor, rows: tuple[int, int], where: Tensor | None
    ) -> CorrespondenceGuide:
        """``rows``: the supervision grid's and the latent's heights (AdaptiveDrag's radius is in latent pixels; the
        features are compared on the grid)."""
        radius = round(p["closs_radius"] * rows[0] / rows[1])
        return cls(p["closs_weight"], p["closs_lr"], p["closs_steps"], radius, handles, targets, where)

    def __call__(self, step: GuideStep) -> Tensor:
        return self.weight * correspondence_loss(step.edited, step.source, self.handles, self.targets, self.radius)
