"""The shared drag loop: one pure function every method runs (DragGAN, Pan et al. 2023, §3.2; DragDiffusion,
Shi et al. 2024, §3.3).

It optimizes a latent so that content under each handle moves towards its target, alternating **motion
supervision** (a loss on features) and **point tracking** (where did the handle content go). It knows nothing
of engines, files or interfaces: it sees a latent, a feature function and the parts it is given, and reports
through one callback dict per step (k-diffusion's convention), which the CLI progress bar, the app's preview,
the trajectory GIF, the result JSON and the tests all read.

All points inside the loop are ``(row, col)`` float tensors on the supervision grid (see ``geometry``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import DivergedError
from .progress import progress_bar
from .protocols import (  # noqa: F401 - the loop's contracts, importable from here too
    DragContext,
    FeatureFn,
    FeatureOutput,
    GradientFusion,
    LossTerm,
    Schedule,
    Supervision,
    Tracker,
    TrackResult,
)


@dataclass
class DragLoopOutput:
    """The optimized latent, the handles tracked on it, why the loop stopped, its per-step records and the context
    its parts built (pass it to the next phase of an edit to keep the same templates)."""

    latent: Tensor
    handles: Tensor
    steps: int
    stop_reason: str
    trajectory: list[dict[str, Any]]
    seconds: float
    context: DragContext | None = None
    budget: int | None = None  # the step budget at the end, when the schedule grows it (adaptive steps)


class TrajectoryRecorder:
    """The observer that turns the loop's callback dicts into the per-step records every result carries (``step``,
    ``handles`` and ``distances`` on the grid, ``losses``, the tracker's ``confidences`` and notes). The loop builds
    its own trajectory with one, through the same callback every other observer reads."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "step": event["step"],
            "handles": event["handles"].tolist(),
            "distances": event["distances"].tolist(),
            "losses": dict(event["losses"]),
        }
        if event["confidences"] is not None:
            record["confidences"] = event["confidences"].tolist()
        record.update(event["notes"])
        self.records.append(record)


def drag_loop(
    latent: Tensor,
    features: FeatureFn,
    handles: Tensor,
    targets: Tensor,
    *,
    tracker: Tracker,
    supervision: Supervision,
    schedule: Schedule,
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    terms: Sequence[LossTerm] = (),
    fusion: GradientFusion | None = None,
    mask: Tensor | None = None,
    context: DragContext | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    disable: bool | None = True,
    desc: str = "drag",
    total: int | None = None,
) -> DragLoopOutput:
    """Run the drag loop and return the optimized latent and the final handle positions.

    At step ``k``: compute features of the current latent; from ``k = 1`` track the handles; stop if the
    schedule says so (every handle within ``schedule.stop_distance`` of its target, or the budget spent);
    otherwise take one optimizer step on ``supervision + Σ terms``, leaving arrived handles out of the motion
    loss. So the final handles are those tracked on the final latent, and ``features`` runs ``1 + steps`` times
    (the initial features are the step-0 features, detached). This is DragDiffusion's order.

    Args:
        latent: the starting latent (not modified; a copy is optimized).
        features: latent → :class:`FeatureOutput` on the supervision grid.
        handles, targets: ``(N, 2)`` ``(row, col)`` on that grid.
        tracker, supervision, schedule: the parts.
        optimizer: builds the optimizer for ``[latent]`` (e.g. ``lambda p: torch.optim.Adam(p, lr=0.01)``).
        terms: extra loss terms (mask term, ...).
        fusion: when given, gradients are taken per term ``group`` ("motion" is the supervision's) and combined by
            it, instead of back-propagating the summed loss.
        mask: ``(h, w)`` float on the grid, 1 = may change; ``None`` = no mask. Parts read it from the context.
        context: a context built for this phase of an edit (its initial features and templates, and a state its
            parts share with earlier phases) instead of a new one from this latent's features; the tracker is not
            prepared here (prepare it on the context). ``handles`` are where the last phase left them, and since
            the latent has changed since (a denoising step, a warp), the handles are tracked at step 0 too.
        callback: receives one dict per step: ``step``, ``latent`` (a detached copy: observers may keep it),
            ``features`` (detached), ``handles``, ``targets``, ``distances``, ``active``, ``losses`` (floats; empty
            on the final step), ``confidences``, ``notes`` (the tracker's), ``final``, and ``budget`` (the step budget
            now) when the schedule can grow it.
        cancel: polled once per step; returning True stops the loop with ``stop_reason="cancelled"``.
        disable: hide the progress bar (``None``: hide it when stderr is not a terminal, tqdm's rule).
        desc, total: the progress bar's label and expected length (the step budget; the loop may stop sooner).
    """
    t0 = time.perf_counter()
    handles = torch.as_tensor(handles, dtype=torch.float64).reshape(-1, 2).clone()
    targets = torch.as_tensor(targets, dtype=torch.float64).reshape(-1, 2).clone()
    if handles.shape != targets.shape:
        raise ValueError(f"handles {tuple(handles.shape)} and targets {tuple(targets.shape)} differ in shape")
    z = latent.detach().clone().requires_grad_(True)
    opt = optimizer([z])

    with torch.enable_grad():
        out = features(z)
    if context is None:
        ctx = DragContext(initial=out.detached(), handles0=handles.clone(), targets=targets, mask=mask)
        tracker.prepare(ctx)
    else:
        ctx = context
        ctx.mask = mask

    recorder = TrajectoryRecorder()
    observers = [recorder] if callback is None else [recorder, callback]
    bar = progress_bar(desc=desc, total=total, disable=disable, unit="step", leave=False)
    step = 0
    reason = "max_steps"
    budget: int | None = None
    try:
        while True:
            ctx.step = step
            notes: dict[str, Any] = {}
            if step > 0 or context is not None:  # a continued phase tracks first: its latent moved since
                if step > 0:
                    with torch.enable_grad():
                        out = features(z)
                tracked = tracker.track(out.features.detach(), handles, ctx)
                handles = tracked.handles.to(torch.float64)
                ctx.confidences = tracked.confidences
                notes = tracked.notes or {}
            distances = (targets - handles).norm(dim=-1)
            stop = schedule.should_stop(step, distances, ctx)
            budget = schedule.budget(ctx) if hasattr(schedule, "budget") else None
            if budget is not None and budget != bar.total:  # a growing budget shows in the bar, never silently
                bar.total = budget
                bar.refresh()
            if stop is None and cancel is not None and cancel():
                stop = "cancelled"
            active = distances >= schedule.stop_distance
            event = {
                "step": step,
                "latent": z.detach().clone(),
                "features": out.features.detach(),
                "handles": handles.clone(),
                "targets": targets,
                "distances": distances,
                "active": active,
                "confidences": ctx.confidences,
                "notes": notes,
                **({"budget": budget} if budget is not None else {}),
            }
            if stop is not None:
                reason = stop
                for observe in observers:
                    observe({**event, "losses": {}, "final": True})
                break

            with torch.enable_grad():
                losses = {"motion": supervision.loss(out.features, handles, active, ctx)}
                groups = {"motion": "motion"}
                for term in terms:
                    value = term(out, ctx)
                    if value is not None:
                        losses[term.name] = value
                        groups[term.name] = term.group
                floats = {k: float(v.detach()) for k, v in losses.items()}
                if not all(math.isfinite(v) for v in floats.values()):
                    raise DivergedError(
                        f"the drag diverged: its loss became non-finite at step {step} ({floats}); lower latent_lr"
                    )
                opt.zero_grad(set_to_none=True)
                if fusion is None:
                    torch.stack([v.to(torch.float32) for v in losses.values()]).sum().backward()
                else:
                    per_group: dict[str, Tensor] = {}
                    for k, v in losses.items():
                        per_group[groups[k]] = per_group.get(groups[k], 0) + v
                    grads = {}
                    names = list(per_group)
                    for i, g in enumerate(names):
                        (grad,) = torch.autograd.grad(per_group[g], z, retain_graph=i < len(names) - 1)
                        grads[g] = grad
                    z.grad = fusion(grads, ctx)
            for observe in observers:
                observe({**event, "losses": floats, "final": False})
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(dist=f"{float(distances.max()):.2f}", loss=f"{sum(floats.values()):.4f}")
    finally:
        bar.close()
    return DragLoopOutput(
        latent=z.detach(),
        handles=handles,
        steps=step,
        stop_reason=reason,
        trajectory=recorder.records,
        seconds=time.perf_counter() - t0,
        context=ctx,
        budget=budget,
    )
