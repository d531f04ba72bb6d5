"""Step schedules: when does the drag loop stop?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..core.loop import DragContext
from ..core.params import Param, default, register
from . import trackers  # noqa: F401 - registers stuck_rounds, the rounds this schedule may read

register(
    Param(
        "adaptive_step_cap",
        int,
        500,
        "adaptive schedule: the most steps the loop may take however many are added",
        "schedule",
        min=1,
    ),
)


def is_stuck(rounds: int, ctx: DragContext) -> bool:
    """Whether ``rounds`` (> 0) tracking rounds in a row have left every handle where it was."""
    return rounds > 0 and ctx.state.get("track.unchanged", 0) >= rounds


@dataclass(frozen=True)
class FixedSchedule:
    """A fixed step budget with early stop (DragGAN, Pan et al. 2023, §3.2; DragDiffusion's loop).

    Stops with ``"arrived"`` when every handle is strictly closer than ``stop_distance`` to its target, with
    ``"stuck"`` when ``stuck`` tracking rounds in a row left every handle where it was (GoodDrag's early stop; needs
    :class:`~dragkit.parts.trackers.PeriodicTracker`'s count; 0 = never), else with ``"max_steps"`` once
    ``max_steps`` optimizer steps have been taken.
    """

    max_steps: int = default("drag_steps")
    stop_distance: float = default("stop_distance")
    stuck: int = default("stuck_rounds")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> FixedSchedule:
        return cls(max_steps=p["drag_steps"], stop_distance=p["stop_distance"], stuck=p["stuck_rounds"])

    def should_stop(self, step: int, distances: Tensor, ctx: DragContext) -> str | None:
        if bool((distances < self.stop_distance).all()):
            return "arrived"
        if is_stuck(self.stuck, ctx):
            return "stuck"
        if step >= self.max_steps:
            return "max_steps"
        return None


@dataclass(frozen=True)
class AdaptiveSchedule:
    """Adaptive steps (AdaptiveDrag, Chen et al. 2024, §3.3): a step is added whenever a handle has moved less than
    expected, up to a cap.

    The rule, which the paper states only in words (and whose released code has no effect): handle ``i`` is
    expected to progress ``e_i = d_i⁰ / max_steps`` per budgeted step, the pace that would bring it to its target
    within the original budget (``d_i⁰`` its initial distance). After step ``k ≥ 1``, with ``a`` steps added so
    far, a handle that has not yet arrived is **behind** when its progress so far falls short of the pace over
    the budgeted steps, ``d_i⁰ − d_i^k < e_i · (k − a)``; if any handle is behind, the budget grows by one step
    (``a += 1``), never beyond ``cap``. A handle that moves at ``v`` of the expected pace therefore gets about
    ``max_steps / v`` steps, a stalled one the cap, one that keeps pace exactly ``max_steps``.

    The comparison is cumulative on purpose: trackers report grid positions, so a handle's progress per single
    step is 0 or a whole pixel. Compared step by step (``d^{k−1} − d^k < e``), a handle that keeps pace on average
    but moves one pixel every few steps would count as behind on most steps and be given steps up to the cap. (On
    the DCGAN's real drags the two rules end alike — mean 279 vs 313 steps, docs/adaptivedrag/README.md — because
    the extended drags run until the tracker reports arrival either way.)

    Stops with ``"arrived"`` as :class:`FixedSchedule` does, with ``"max_steps"`` when the (grown) budget is
    spent, and with ``"step_cap"`` when the cap is reached.
    """

    max_steps: int = default("drag_steps")
    stop_distance: float = default("stop_distance")
    cap: int = default("adaptive_step_cap")
    stuck: int = default("stuck_rounds")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> AdaptiveSchedule:
        return cls(
            max_steps=p["drag_steps"],
            stop_distance=p["stop_distance"],
            cap=p["adaptive_step_cap"],
            stuck=p["stuck_rounds"],
        )

    def budget(self, ctx: DragContext) -> int | None:
        """The step budget as it stands (``drag_steps`` plus the steps added so far); the loop's progress bar and
        each result show it."""
        return ctx.state.get("adaptive.budget")

    def should_stop(self, step: int, distances: Tensor, ctx: DragContext) -> str | None:
        st = ctx.state
        if step == 0 or "adaptive.budget" not in st:
            st["adaptive.budget"] = min(self.max_steps, self.cap)
            st["adaptive.added"] = 0
            st["adaptive.start"] = distances.clone()
            st["adaptive.expected"] = distances / max(self.max_steps, 1)
        else:
            moving = distances >= self.stop_distance
            pace = st["adaptive.expected"] * (step - st["adaptive.added"])
            behind = moving & ((st["adaptive.start"] - distances) < pace - 1e-9)
            if bool(behind.any()) and st["adaptive.budget"] < self.cap:
                st["adaptive.budget"] += 1
                st["adaptive.added"] += 1
        if bool((distances < self.stop_distance).all()):
            return "arrived"
        if is_stuck(self.stuck, ctx):
            return "stuck"
        if step >= self.cap:
            return "step_cap"
        if step >= st["adaptive.budget"]:
            return "max_steps"
        return None


SCHEDULES = {"fixed": FixedSchedule, "adaptive": AdaptiveSchedule}

register(Param("schedule", str, "fixed", "step-schedule part", "loop", choices=tuple(SCHEDULES), common=True))
