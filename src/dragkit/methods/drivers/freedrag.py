"""``sampler=freedrag``: rounds of updates toward adaptive templates, the points placed by line search (FreeDrag)."""

from __future__ import annotations

import torch

from ...core.errors import ParameterError
from ...core.loop import DragContext
from ...core.params import default
from ...parts import LatentMaskTerm, build_fusion
from ...parts.freedrag import freedrag_parts, latent_mask_term
from ..method import LoopParts
from .edit import DiffusionEdit, Outcome
from .steps import closs_guides, loop_features, loop_terms, run_loop, sample, warped

# What FreeDrag's parts replace: point tracking and its wrappers, the motion supervision and the step schedule.
REPLACED = ("tracker", "supervision", "schedule", "backtrack", "track_every", "track_lagged", "stuck_rounds")


def drag_in_rounds(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """FreeDrag (Ling et al., CVPR 2024; its released code's order): the shared drag loop on the inverted latent with
    FreeDrag's parts (:mod:`dragkit.parts.freedrag`), then DragDiffusion's sampling with mutual self-attention.

    1. The starting latent's features: each point's template (its handle's patch) and, with a mask, the mask term's
       reference one-step denoise.
    2. The loop, in rounds: a line search places each point not yet arrived on the segment to its target (the first
       one on the starting features), then up to ``round_updates`` Adam updates with the points fixed pull the
       features around each point toward its template (every point, arrived ones too), plus the latent mask term
       reduced as ``mask_reduction`` says; at the round's end the templates adapt and arrival is decided. It ends
       when every point is within ``stop_distance`` of its target with its template loss under ``threshold_l``, or
       after ``drag_steps`` updates. The step's features serve both the round's end and the next update (their code
       computes them twice, equal).
    3. Sampling from the drag's timestep, ``[source, edited]`` with mutual self-attention (:func:`sample`); CLoss
       while sampling and an edit prompt's CLIP term in the loop act as with ``sampler=drag``.

    FreeDrag's parts stand in for the tracker, the supervision and the schedule: a preset that names others gets a
    one-line error rather than having them ignored. With ``init=warp`` the loop starts from FastDrag's warp, the
    templates from the content before it."""
    p = edit.params
    for name in REPLACED:
        if p[name] != default(name):
            raise ParameterError(
                f"{name}={p[name]!r}: sampler=freedrag places the points by its line search in rounds and reads no "
                f"{name}; leave it at {default(name)!r}"
            )
    terms, denoised, clip = loop_terms(edit)
    terms = [latent_mask_term(p) if type(t) is LatentMaskTerm else t for t in terms]
    features = loop_features(edit, denoised, clip)
    own = freedrag_parts(p)
    parts = LoopParts(own.tracker, own.supervision, own.schedule, terms, build_fusion(p))
    start, handles = edit.latent.float(), edit.handles
    if p["init"] == "warp":
        start, handles = warped(edit)
    with torch.no_grad():  # their F₀: the templates and the mask term's reference
        initial = features(edit.latent.float()).detached()
    context = DragContext(initial, edit.handles.clone(), edit.targets, edit.mask)
    parts.tracker.prepare(context)
    out = run_loop(edit, parts, start, features, handles, edit.mask, context)
    guides = closs_guides(edit)
    reports: list[dict[str, float]] = []
    z = sample(edit, out.latent.to(edit.latent.dtype), guides, reports)
    rounds = [r for r in out.trajectory if "round" in r]
    facts = {
        "freedrag": {
            "rounds": len(rounds),
            "arrived": context.state["freedrag"]["arrived"].tolist(),
            "searches": [r["search"] for r in rounds],
        }
    }
    if guides:
        facts["closs"] = [r["closs"] for r in reports if "closs" in r]
    return [Outcome(z, out, facts)]
