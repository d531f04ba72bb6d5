"""``sampler=warp``: warp, then sample (FastDrag; dragkit's recipe)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.errors import ParameterError
from ...core.loop import DragLoopOutput
from ...engines.diffusion import inversion_step_count, renoise
from ...parts.warp import repair_region
from .edit import DiffusionEdit, Outcome
from .steps import sample, warped


def warp_then_sample(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """FastDrag's way (Zhao et al., NeurIPS 2024): no optimization; the inverted latent is warped in one step
    (:func:`warped`) and denoised (:func:`sample`). Its consistency-preserving strategy is sampling from recorded
    source inputs: the mutual layers' keys and values come from what the inversion recorded at the same timestep
    (``source_kv=inversion``, the preset's default; with ``recompute`` the source branch is denoised alongside or
    recorded). The reported handles are where the warp put them: nothing is tracked."""
    zw, moved = warped(edit)
    edit.info["handles_tracked"] = False
    z = sample(edit, repaired(edit, zw) if edit.params["repair_strength"] > 0 else zw, [], [])
    return [Outcome(z, DragLoopOutput(zw.float(), moved, 0, "warp", [], 0.0))]


def repaired(edit: DiffusionEdit, zw: Tensor) -> Tensor:
    """Re-generate the warp's seams and stretched places (``repair_strength``): inside :func:`repair_region` the
    warped latent is re-noised forward to the timestep of ``repair_strength`` and denoised back to the drag's
    timestep with plain self-attention, while everywhere else each step is replaced by the warped latent re-noised
    to that step with the same noise (blended sampling); at the drag's timestep the outside is the warped latent
    exactly. Returns the latent to sample from there."""
    engine, p = edit.engine, edit.params
    steps = p["inference_steps"]
    first = steps - inversion_step_count(p["repair_strength"], steps)
    if first >= edit.start:
        raise ParameterError(
            f"repair_strength={p['repair_strength']} must re-noise more than inversion_strength="
            f"{p['inversion_strength']} does ({steps - first} against {steps - edit.start} of {steps} steps)"
        )
    timesteps = engine.scheduler.timesteps
    size = tuple(zw.shape[-2:])
    where = repair_region(edit.mask, edit.targets, edit.grid, size, p["repair_keep"], p["repair_band"]).to(zw)
    edit.info["repair"] = {"region_cells": int(where.sum()), "steps": edit.start - first}
    noise = torch.randn(zw.shape, generator=torch.Generator().manual_seed(edit.request.seed)).to(zw)
    base = timesteps[edit.start]
    with edit.prof.stage("repair"):
        z = renoise(engine.scheduler, zw, base, timesteps[first], noise)
        for k in range(first, edit.start):
            _, z = engine.denoise(z, edit.embeds, k, k + 1, progress=False, autocast_mode=p["autocast"])
            known = renoise(engine.scheduler, zw, base, timesteps[k + 1], noise)
            z = where * z + (1 - where) * known
    return z
