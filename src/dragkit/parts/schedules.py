"""Step schedules: when does the drag loop stop?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..loop import DragContext


@dataclass(frozen=True)
class FixedSchedule:
    """A fixed step budget with early stop (DragGAN, Pan et al. 2023, §3.2; DragDiffusion's loop).

    Stops with ``"arrived"`` when every handle is strictly closer than ``stop_distance`` to its target, else with
    ``"max_steps"`` once ``max_steps`` optimizer steps have been taken.
    """

    max_steps: int = 80
    stop_distance: float = 2.0

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> FixedSchedule:
        return cls(max_steps=p["drag_steps"], stop_distance=p["stop_distance"])

    def should_stop(self, step: int, distances: Tensor, ctx: DragContext) -> str | None:
        if bool((distances < self.stop_distance).all()):
            return "arrived"
        if step >= self.max_steps:
            return "max_steps"
        return None
