"""``sampler=alternate``: drag and denoise in turn (GoodDrag)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...core.loop import DragContext, DragLoopOutput
from ..method import build_parts
from .edit import DiffusionEdit, Outcome
from .steps import loop_terms, run_loop, warped


def alternate_drag_denoise(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """GoodDrag's alternating drag and denoising (AlDD; Zhang et al., ICLR 2025; its released code's order): instead of
    dragging all at once at one timestep, drag a little at each of the first ``drag_phases`` timesteps of the
    sampling and denoise one step between, so that each denoising step repairs what the last drag did.

    0. The un-edited trajectory: the inverted latent is denoised alone through those timesteps, keeping at each its
       features and its one-step denoise. These are each phase's references: the motion template and the tracking
       template (information-preserving supervision, ``supervision=initial``: always the original handle's
       features, at the phase's own timestep) and the mask term's reference.
    1. At each phase's timestep: a drag phase — the shared loop with a fresh optimizer, up to ``drag_steps`` updates,
       tracking first and then every ``track_every`` updates — on the edited latent, its handles carried over; then
       one DDIM step of the batch ``[original, edited]`` with plain self-attention.
    2. Dragging ends after the last phase, when every handle has arrived, or when ``stuck_rounds`` tracking rounds in
       a row moved nothing (counted across phases); the rest of the schedule is sampled with mutual self-attention.

    GoodDrag's mask term is always on: without a mask it keeps the whole latent near the un-edited trajectory. With
    ``init=warp`` the first phase starts from FastDrag's warp of the inverted latent."""
    engine, p = edit.engine, edit.params
    terms, _, clip = loop_terms(edit)
    parts = build_parts(p, terms=terms)
    mask = edit.mask if edit.mask is not None else torch.zeros(edit.grid, device=engine.device)
    timesteps = engine.scheduler.timesteps[edit.start :]
    phases = min(p["drag_phases"], len(timesteps))
    fb, amp = p["feature_block"], p["autocast"]

    def at(t: Tensor, **kw: Any) -> Any:
        return engine.features_at(t, edit.embeds, fb, edit.grid, denoised=True, autocast_mode=amp, **kw)

    originals, z_orig = [], edit.latent.float()
    with edit.prof.stage("trajectory"), torch.no_grad():
        for t in timesteps[:phases]:
            out = at(t)(z_orig)
            originals.append(out.detached())
            z_orig = out.denoised
    z, z_orig, handles = edit.latent, edit.latent, edit.handles
    if p["init"] == "warp":  # the first phase starts from the warp, its handles where the warp put them
        z, handles = warped(edit)
        z = z.to(edit.latent.dtype)
    state: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    stop, done = "max_steps", 0
    for k, t in enumerate(timesteps[:phases]):
        context = DragContext(originals[k], edit.handles.clone(), edit.targets, mask, state=state)
        parts.tracker.prepare(context)
        out = run_loop(edit, parts, z, at(t, x0_image=clip), handles, mask, context, {"phase": k, "step": done})
        records += [{**r, "step": done + r["step"], "phase": k} for r in out.trajectory]
        z, handles, stop, done = out.latent.to(edit.latent.dtype), out.handles, out.stop_reason, done + out.steps
        with edit.prof.stage("sampling"):  # one step of both branches; mutual attention only once dragging is over
            z_orig, z = engine.denoise(
                z, edit.embeds, edit.start + k, edit.start + k + 1, z_src=z_orig, progress=False
            )
        if stop != "max_steps":  # arrived, stuck or cancelled: no more dragging
            break
    with edit.prof.stage("sampling"):
        _, z = engine.denoise(
            z, edit.embeds, edit.start + k + 1, z_src=z_orig, mutual=edit.mutual, progress=edit.progress,
            autocast_mode=amp,
        )  # fmt: skip
    edit.info["drag_phases"] = k + 1
    loop = DragLoopOutput(z.float(), handles, done, stop, records, 0.0)
    return [Outcome(z, loop)]
