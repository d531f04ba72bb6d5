"""``sampler=drag``: optimize, then sample (DragDiffusion and the methods built on it)."""

from __future__ import annotations

from .edit import DiffusionEdit, Outcome
from .steps import closs_guides, drag, sample


def optimize_then_sample(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """DragDiffusion's way (Shi et al. 2024, §3): optimize the inverted latent with the drag loop, then denoise the
    batch ``[source, edited]`` with mutual self-attention from the drag's timestep to the end (:func:`sample`);
    CLoss, when on, acts while sampling."""
    out = drag(edit)
    guides = closs_guides(edit)
    reports: list[dict[str, float]] = []
    z = sample(edit, out.latent.to(edit.latent.dtype), guides, reports)
    info = {"closs": [r["closs"] for r in reports if "closs" in r]} if guides else {}
    return [Outcome(z, out, info)]
