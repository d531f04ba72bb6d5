"""``sampler=guidance``: guide while sampling, nothing optimized (LucidDrag)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import ParameterError
from ...core.geometry import drag_region
from ...core.loop import DragLoopOutput
from ...core.protocols import SamplingGuide
from ...engines.diffusion import Variation
from ...parts import EditingEnergyGuide, QualityGuide, SemanticGuide, fit_patch_discriminator
from ...parts.intentions import Intention, LLMReasoner, reason
from .edit import DiffusionEdit, Outcome
from .steps import closs_guides, warped

logger = logging.getLogger(__name__)


@dataclass
class GuidanceOptions:
    """What LucidDrag's guided sampling takes beyond parameters.

    ``intention``: the intention whose prompts steer the semantic guidance (default: the reasoner's most likely).
    ``num_results``: this many results, best first — one per intention, most confident first, then seed variants
    (``variant_eta``); ``None``: one. ``llm``: the endpoint proposing the intentions (default: the built-in geometry
    reasoner). ``discriminator``: the quality term's image-fidelity model, any module mapping ``(B, 3, H, W)`` images
    in [0, 1] to logits (default: a patch discriminator fitted to the input image).
    """

    intention: Intention | None = None
    num_results: int | None = None
    llm: LLMReasoner | None = None
    discriminator: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        n = self.num_results
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise ParameterError(f"num_results={n!r}: expected a whole number of results, 1 or more")
        if n is not None and n < 1:
            raise ParameterError(f"num_results={n}: ask for at least 1 result")
        if self.discriminator is not None and not isinstance(self.discriminator, torch.nn.Module):
            raise ParameterError(f"discriminator: expected a torch.nn.Module, got {type(self.discriminator).__name__}")


def keep_region(edit: DiffusionEdit) -> Tensor:
    """What must stay, on the grid (1 = keep): outside the mask, or without one outside the drag's path."""
    if edit.mask is not None:
        return 1 - edit.mask.float()
    pairs = [
        ((float(h[1]), float(h[0])), (float(t[1]), float(t[0])))
        for h, t in zip(edit.handles, edit.targets, strict=True)
    ]
    return torch.from_numpy(~drag_region(edit.grid, pairs, max(2.0, 0.1 * max(edit.grid)))).float()


def energy_guides(edit: DiffusionEdit, options: GuidanceOptions, keep: Tensor) -> list[SamplingGuide]:
    """The guides every result shares: the editing energy and the quality term's discriminator (the user's, or a
    patch discriminator fitted to the input image)."""
    p, info = edit.params, edit.info
    guides: list[SamplingGuide] = []
    if p["guide_edit"] > 0:
        guides.append(
            EditingEnergyGuide(
                p["guide_edit"],
                p["guide_steps"],
                p["guide_radius"],
                edit.handles,
                edit.targets,
                keep.to(edit.engine.device),
                p["guide_keep"],
                p["guide_vacate"],
            )
        )
    disc = options.discriminator
    if disc is not None:
        disc = disc.to(edit.engine.device).eval()  # only the input's gradient is taken
        info["discriminator"] = type(options.discriminator).__name__
    elif p["guide_quality"] > 0:
        with edit.prof.stage("discriminator"):
            disc = fit_patch_discriminator(
                edit.source_image, steps=p["discriminator_steps"], seed=edit.request.seed
            ).to(edit.engine.device)
        info["discriminator"] = "PatchDiscriminator fitted to the input image"
    if p["guide_quality"] > 0 and disc is not None:
        guides.append(QualityGuide(disc, p["guide_quality"], p["guide_steps"]))
    return guides


def result_plan(edit: DiffusionEdit, options: GuidanceOptions) -> list[tuple[Intention, int]]:
    """``(intention, variant)`` for each result, best first: the intentions in order of confidence, then seed
    variants of them (variant ``v`` re-noises the edit region with seed ``seed + v``). When the intentions cannot
    steer (an unconditional model, or ``guide_semantic=0``) only the most likely one is used and the other results
    are all seed variants."""
    req, n_results = edit.request, options.num_results or 1
    if options.intention is not None:
        intentions = [options.intention]
    else:
        with edit.prof.stage("intentions"):
            intentions = reason(
                req.handles, req.targets, req.prompt, image=req.image, mask=req.mask, n=n_results, llm=options.llm
            )
    if not (edit.engine.conditional and edit.params["guide_semantic"] > 0):
        intentions = intentions[:1]
    n = len(intentions)
    return [(intentions[k % n], k // n) for k in range(n_results)]


def guide_while_sampling(edit: DiffusionEdit, options: GuidanceOptions | None = None) -> list[Outcome]:
    """LucidDrag's way (Cui et al., NeurIPS 2024, §3.2): no latent optimization; the inverted latent is denoised with
    mutual self-attention while the edited branch is guided by the editing energy, the discriminator's quality
    score and the chosen intention's prompt direction. One result per ``(intention, variant)`` of the plan; a seed
    variant re-noises the edit region (DiffEditor's regional SDE). The reported handles are the targets: nothing is
    tracked. With ``init=warp`` the edited branch starts from FastDrag's warp of the inverted latent (the source
    branch from the inverted latent itself), so the guidance finishes a move the warp began."""
    options = options or GuidanceOptions()
    engine, p, info = edit.engine, edit.params, edit.info
    info["handles_tracked"] = False
    keep = keep_region(edit)
    region = F.interpolate((1 - keep)[None, None], size=edit.latent.shape[-2:], mode="nearest").to(engine.device)
    shared = energy_guides(edit, options, keep)
    if p["guide_semantic"] > 0 and not engine.conditional:
        info["semantic_guidance"] = "not applied: this model has no text conditioning"
        logger.warning("semantic guidance does not apply: %s has no text conditioning", engine.name)
    plan = result_plan(edit, options)
    start = warped(edit)[0].to(edit.latent.dtype) if p["init"] == "warp" else edit.latent
    undragged = DragLoopOutput(start.float(), edit.targets.clone(), 0, "guidance", [], 0.0)
    outcomes = []
    for k, (chosen, variant) in enumerate(plan):
        guides = [*shared, *semantic_guides(edit, chosen), *closs_guides(edit)]
        variation = None
        if variant > 0:  # a seed variant: fresh noise in the edit region
            variation = Variation(p["variant_eta"], region, torch.Generator().manual_seed(edit.request.seed + variant))
        reports: list[dict[str, float]] = []
        with edit.prof.stage("sampling"):
            _, z = engine.denoise(
                start.clone(),
                edit.embeds,
                edit.start,
                z_src=edit.latent,
                mutual=edit.mutual,
                guides=guides,
                feature_block=p["feature_block"],
                grid=edit.grid,
                variation=variation,
                progress=edit.progress,
                reports=reports,
            )
        result = {
            "intention": chosen.to_dict(),
            "guidance": [{e: r[e] for e in ("edit", "quality") if e in r} for r in reports[: p["guide_steps"]]],
            "result": {"index": k, "of": len(plan), "variant": variant, "eta": p["variant_eta"] if variant else 0.0},
        }
        if p["closs_weight"] > 0:
            result["closs"] = [r["closs"] for r in reports if "closs" in r]
        outcomes.append(Outcome(z, undragged, result))
    return outcomes


def semantic_guides(edit: DiffusionEdit, chosen: Intention) -> list[SamplingGuide]:
    """The chosen intention's source → target prompt direction (text-conditioned models only)."""
    p, engine = edit.params, edit.engine
    if not (p["guide_semantic"] > 0 and engine.conditional):
        return []
    size = (edit.image.shape[-1], edit.image.shape[-2])
    target = engine.cond(engine.encode_prompt(chosen.target_prompt, size), 2)
    source = engine.cond(engine.encode_prompt(chosen.source_prompt, size), 2)
    return [SemanticGuide(p["guide_semantic"], p["guide_steps"], target, source)]
