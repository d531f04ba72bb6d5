"""``sampler=bottleneck``: optimize the UNet's bottleneck, then denoise with it substituted (DragNoise)."""

from __future__ import annotations

import torch

from ..method import build_parts
from .edit import DiffusionEdit, Outcome
from .steps import loop_terms, run_loop


def optimize_bottleneck(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """DragNoise (Liu et al., CVPR 2024; its released code's order): the drag optimizes the UNet's bottleneck — the
    mid block's output at the drag's timestep — instead of the latent, and that bottleneck is then substituted for
    the mid block's output while denoising.

    1. The drag: the shared loop over the bottleneck, the inverted latent fixed (features of ``up_blocks`` computed
       with the mid block's output replaced; the mask term's one-step denoise is of the fixed latent with that
       noise prediction). As DragNoise's code, the mask term is always on: without a mask it keeps the whole latent's
       one-step denoise near the un-edited one.
    2. The propagation: the inverted latent, unchanged, is denoised from the drag's timestep with the optimized
       bottleneck in place of the mid block's output at every step before the last ``propagate_end`` of the
       schedule, then plainly. No source branch, no mutual self-attention (their code has neither)."""
    engine, p = edit.engine, edit.params
    terms, _, clip = loop_terms(edit)
    mask = edit.mask if edit.mask is not None else torch.zeros(edit.grid, device=engine.device)
    h0, features = engine.bottleneck_at(
        edit.timestep,
        edit.embeds,
        edit.latent,
        p["feature_block"],
        edit.grid,
        denoised=p["lam"] > 0,
        x0_image=clip,
        autocast_mode=p["autocast"],
    )
    out = run_loop(edit, build_parts(p, terms=terms), h0, features, edit.handles, mask, None)
    steps = len(engine.scheduler.timesteps)
    until = max(edit.start, steps - p["propagate_end"])  # an index into the whole schedule, as their end_step
    common = dict(progress=edit.progress, autocast_mode=p["autocast"])
    with edit.prof.stage("sampling"):
        with engine.with_bottleneck(out.latent.to(edit.latent.dtype)):
            _, z = engine.denoise(edit.latent, edit.embeds, edit.start, until, **common)
        if until < steps:
            _, z = engine.denoise(z, edit.embeds, until, **common)
    facts = {"bottleneck": {"shape": list(h0.shape), "substituted_steps": until - edit.start}}
    return [Outcome(z, out, facts)]
