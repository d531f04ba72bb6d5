"""Step schedules: when does the drag loop stop?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..loop import DragContext
from ..params import Param, register

register(
    Param("schedule", str, "fixed", "step-schedule part", "loop", choices=("fixed", "adaptive")),
    Param(
        "adaptive_step_cap",
        int,
        500,
        "adaptive schedule: the most steps the loop may take however many are added",
        "schedule",
        min=1,
    ),
)


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


@dataclass(frozen=True)
class AdaptiveSchedule:
    """Adaptive steps (AdaptiveDrag, Chen et al. 2024, §3.3): a step is added whenever a handle moved less than
    expected, up to a cap.

    The rule, which the paper states only in words (and whose released code has no effect): handle ``i`` is
    expected to progress ``e_i = d_i⁰ / max_steps`` per step, the pace that would bring it to its target within the
    original budget (``d_i⁰`` its initial distance). After each step ``k ≥ 1``, if some handle that had not yet
    arrived progressed less than that, ``d_i^{k−1} − d_i^k < e_i``, the budget grows by one step, never beyond
    ``cap``. Put differently, ``max_steps`` counts the steps on which every moving handle kept pace; the others
    are given back. A handle that moves at ``v`` of its expected pace therefore gets about ``max_steps / v``
    steps, a stalled one the cap. Stops with ``"arrived"`` as :class:`FixedSchedule` does, with ``"max_steps"``
    when the (grown) budget is spent, and with ``"step_cap"`` when the cap is reached.
    """

    max_steps: int = 160
    stop_distance: float = 2.0
    cap: int = 500

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> AdaptiveSchedule:
        return cls(max_steps=p["drag_steps"], stop_distance=p["stop_distance"], cap=p["adaptive_step_cap"])

    def should_stop(self, step: int, distances: Tensor, ctx: DragContext) -> str | None:
        st = ctx.state
        if step == 0 or "adaptive.budget" not in st:
            st["adaptive.budget"] = min(self.max_steps, self.cap)
            st["adaptive.expected"] = distances / max(self.max_steps, 1)
        else:
            prev = st["adaptive.previous"]
            moving = prev >= self.stop_distance
            behind = moving & ((prev - distances) < st["adaptive.expected"])
            if bool(behind.any()) and st["adaptive.budget"] < self.cap:
                st["adaptive.budget"] += 1
        st["adaptive.previous"] = distances.clone()
        if bool((distances < self.stop_distance).all()):
            return "arrived"
        if step >= self.cap:
            return "step_cap"
        if step >= st["adaptive.budget"]:
            return "max_steps"
        return None


SCHEDULES = {"fixed": FixedSchedule, "adaptive": AdaptiveSchedule}
