"""Point trackers: where did each handle's content go after a latent update?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..geometry import sample, window
from ..loop import DragContext, TrackResult
from ..params import Param, register

register(
    Param("tracker", str, "nearest", "point-tracking part", "loop", choices=("nearest",)),
    Param("r_p", int, 3, "tracking search radius (supervision-grid pixels)", "tracker", min=0),
)


@dataclass(frozen=True)
class NearestTracker:
    """Nearest-neighbour point tracking (DragGAN, Pan et al. 2023, eq. 2; DragDiffusion, Shi et al. 2024, eq. 4).

    ``p_i ← argmin_{q ∈ Ω2(p_i, r_p)} ‖F(q) − f_i‖₁`` with ``f_i = F₀(p_i⁰)`` the handle's feature on the initial
    latent (bilinearly sampled when ``p_i⁰`` is sub-pixel) and ``Ω2`` the ``(2r_p+1)²`` integer window around the
    rounded current handle, clipped to the grid. Ties go to the first minimum in row-major order. Gives no
    confidence.
    """

    r_p: int = 3

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> NearestTracker:
        return cls(r_p=p["r_p"])

    def prepare(self, ctx: DragContext) -> None:
        ctx.state["nearest.templates"] = sample(ctx.features0, ctx.handles0)  # (N, C)

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        templates = ctx.state["nearest.templates"]
        h, w = features.shape[-2:]
        new = []
        for i in range(handles.shape[0]):
            cand = window(handles[i], self.r_p, (h, w))
            f = features[0, :, cand[:, 0].long(), cand[:, 1].long()].T  # (K, C)
            cost = (f - templates[i]).abs().sum(-1)
            new.append(cand[int(torch.argmin(cost))])
        return TrackResult(handles=torch.stack(new))


TRACKERS = {"nearest": NearestTracker}
