"""Drivers: the few ways a diffusion method uses the engine once the source is inverted.

A driver is a short function over the engine, the drag loop and the parts: it receives the edit the pipeline
prepared (:class:`DiffusionEdit`: the inverted latent, the points and the mask on the supervision grid, the
mutual-attention layers, ...) and returns one :class:`Outcome` per result — the edited latent to decode, the drag's
steps and the result's facts. A preset names its driver through the ``sampler`` parameter, whose choices are the
drivers registered here:

- ``drag`` — :func:`optimize_then_sample`: the drag loop optimizes the latent, then both branches are denoised with
  mutual self-attention (DragDiffusion and the methods built on it; CLoss acts while sampling);
- ``guidance`` — :func:`guide_while_sampling`: nothing is optimized; sampling-time parts guide the denoising
  (LucidDrag), one result per intention and seed variant.

Adding a method that uses the engine another way (GoodDrag's alternation, FastDrag's warp) is a new driver here and
a preset in :mod:`dragkit.methods.presets`; its new ideas are parts any other method can use by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import ParameterError
from ..core.geometry import GridMap, drag_region
from ..core.loop import DragContext, DragLoopOutput, drag_loop
from ..core.params import Param, register
from ..core.protocols import SamplingGuide
from ..core.types import DragRequest
from ..engines.diffusion import (
    DiffusionEngine,
    Embeds,
    Records,
    Variation,
    gradient_checkpointing,
    inversion_step_count,
    renoise,
    weights_require_grad,
)
from ..parts import (
    ClipGuidanceTerm,
    CorrespondenceGuide,
    EditingEnergyGuide,
    LatentMaskTerm,
    QualityGuide,
    SemanticGuide,
    fit_patch_discriminator,
    load_clip,
)
from ..parts.intentions import Intention, LLMReasoner, reason
from ..parts.warp import repair_region, warp_on_grid
from ..utils.profiler import StageProfiler
from .method import adam, build_parts

logger = logging.getLogger(__name__)


@dataclass
class DiffusionEdit:
    """One edit as the pipeline prepared it for a driver: everything up to the inverted latent.

    ``latent`` is the inverted ``z_t`` at ``timesteps[start]`` (``timestep``); ``handles``/``targets`` are ``(row,
    col)`` on the supervision ``grid`` (``grid_map`` maps them back to image pixels) and ``mask`` is the editable
    region there (1 = may change) or ``None``. ``source`` holds the source branch's inputs to the ``mutual`` layers
    when they need not be recomputed (``source_kv=inversion``, or a ``source_cache`` hit); ``cache_key`` is where
    the source is kept once sampled (``source_cache``), ``None`` when it is not, and ``cache_hit`` says the source
    came from there. ``info`` collects the facts every result reports.
    """

    engine: DiffusionEngine
    request: DragRequest
    method: str
    params: dict[str, Any]
    embeds: Embeds
    image: Tensor
    latent: Tensor
    start: int
    timestep: Tensor
    grid: tuple[int, int]
    grid_map: GridMap
    handles: Tensor
    targets: Tensor
    mask: Tensor | None
    mutual: list[str]
    source: Records | None
    cache_key: tuple | None
    cache_hit: bool
    info: dict[str, Any]
    prof: StageProfiler
    callback: Callable[[dict[str, Any]], None] | None = None
    cancel: Callable[[], bool] | None = None
    progress: bool = True

    @property
    def points(self) -> tuple[Tensor, Tensor]:
        return self.handles, self.targets

    @property
    def source_image(self) -> Tensor:
        """The input image at the working size, ``(1, 3, H, W)`` in [0, 1]."""
        return (self.image.float() / 2 + 0.5).clamp(0, 1)


@dataclass
class Outcome:
    """One result of a driver: the edited latent to decode, the drag loop's output (a stand-in with no steps when
    nothing was optimized) and the facts this result reports on top of the edit's."""

    latent: Tensor
    loop: DragLoopOutput
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Driver:
    """A registered driver: its function, what it is, the typed options it accepts beyond the parameters (``None``:
    none), and whether its sampling reads the source branch beyond the mutual layers' inputs (then the source can be
    neither read from the inversion, ``source_kv=inversion``, nor kept, ``source_cache``)."""

    name: str
    run: Callable[[DiffusionEdit, Any], list[Outcome]]
    summary: str
    options: type | None = None
    reads_source_branch: bool = False


DRIVERS: dict[str, Driver] = {}


def register_driver(driver: Driver) -> Driver:
    DRIVERS[driver.name] = driver
    return driver


def get_driver(name: str) -> Driver:
    return DRIVERS[name]  # the ``sampler`` parameter's choices are DRIVERS' keys: a resolved name is registered


# ---- optimize, then sample -------------------------------------------------------------------------------------


def loop_terms(edit: DiffusionEdit) -> tuple[list[Any], bool, bool]:
    """The drag's extra loss terms and what the feature function must provide for them: DragDiffusion's mask term
    (the one-step denoise, only with a mask) and CLIPDrag's CLIP term (the decoded x0-prediction, only with an edit
    prompt)."""
    p, req = edit.params, edit.request
    terms: list[Any] = [LatentMaskTerm.from_params(p)]
    denoised = edit.mask is not None and p["lam"] > 0
    clip = req.edit_prompt.strip() and p["clip_weight"] > 0
    if clip:
        with edit.prof.stage("clip_load"):
            bundle = load_clip(p["clip_model"])
            bundle.model.to(edit.engine.device)
            terms.append(
                ClipGuidanceTerm.build(
                    bundle, req.edit_prompt, p["clip_weight"], p["clip_loss"], edit.source_image, req.prompt
                )
            )
        edit.info["clip"] = {"model": p["clip_model"], "loss": p["clip_loss"]}
    return terms, denoised, bool(clip)


def run_loop(
    edit: DiffusionEdit,
    parts: Any,
    latent: Tensor,
    features: Any,
    handles: Tensor,
    mask: Tensor | None,
    context: DragContext | None,
    extra: dict[str, Any] | None = None,
) -> DragLoopOutput:
    """One run of the shared drag loop for a driver: the parts, Adam at ``latent_lr``, the UNet's weights frozen (the
    backward computes the latent's gradient only), gradient checkpointing when asked, the "drag" stage profiled.
    The caller's callback sees each step with ``handles_xy`` (image pixels) and ``extra``'s keys; ``extra["step"]``,
    when given, is added to the step number (a phase's offset)."""
    p, engine = edit.params, edit.engine
    extra = dict(extra or {})
    offset = extra.pop("step", 0)

    def on_step(ev: dict[str, Any]) -> None:
        ev.update(extra, step=offset + ev["step"])
        ev["handles_xy"] = edit.grid_map.to_image(ev["handles"]).tolist()
        if edit.callback is not None:
            edit.callback(ev)

    frozen = weights_require_grad(engine.unet, False)
    with edit.prof.stage("drag"), frozen, gradient_checkpointing(engine.unet, p["grad_checkpointing"]):
        return drag_loop(
            latent.float(),
            features,
            handles,
            edit.targets,
            tracker=parts.tracker,
            supervision=parts.supervision,
            schedule=parts.schedule,
            terms=parts.terms,
            fusion=parts.fusion,
            optimizer=adam(p["latent_lr"]),
            mask=mask,
            context=context,
            callback=on_step,
            cancel=edit.cancel,
            disable=None if edit.progress else True,
            total=p["drag_steps"],
        )


def drag(edit: DiffusionEdit) -> DragLoopOutput:
    """The shared drag loop on the inverted latent at the edit's timestep, with the parts its parameters name: the
    UNet's weights frozen (the backward computes the latent's gradient only), the forward stopped at the feature
    block unless a term needs the noise prediction.

    With ``init=warp`` the loop starts from FastDrag's warp of the inverted latent (:func:`warped`), its handles
    where the warp moved them, its templates (``F₀``) from the un-warped latent: the warp does the drag and the loop
    only finishes what it left (usually nothing: the handles start on their targets)."""
    p, engine = edit.params, edit.engine
    terms, denoised, clip = loop_terms(edit)
    features = engine.features_at(
        edit.timestep,
        edit.embeds,
        p["feature_block"],
        edit.grid,
        denoised=denoised,
        x0_image=clip,
        autocast_mode=p["autocast"],
    )
    parts = build_parts(p, terms=terms)
    start, handles, context = edit.latent.float(), edit.handles, None
    if p["init"] == "warp":
        start, handles = warped(edit)
        with torch.enable_grad():  # the templates come from the content before the warp moved it
            initial = features(edit.latent.float().requires_grad_(True)).detached()
        context = DragContext(initial, edit.handles.clone(), edit.targets, edit.mask)
        parts.tracker.prepare(context)
    return run_loop(edit, parts, start, features, handles, edit.mask, context)


def warped(edit: DiffusionEdit) -> tuple[Tensor, Tensor]:
    """FastDrag's one-step warp of the inverted latent (:func:`dragkit.parts.warp.latent_warp`): the points, rounded
    on the supervision grid, scaled to the latent's grid (not rounded again, as their code does), the editable region
    at the latent's resolution. Returns the warped latent and where the warp put each handle, on the grid."""
    with edit.prof.stage("warp"):
        z, moved, cells = warp_on_grid(
            edit.latent,
            edit.handles,
            edit.targets,
            edit.mask,
            edit.grid,
            edit.params["warp_fill"],
            edit.params["warp_sample"],
        )
    edit.info["warp"] = {
        "region_cells": cells,
        "fill": edit.params["warp_fill"],
        "sample": edit.params["warp_sample"],
    }
    return z, moved


def closs_guides(edit: DiffusionEdit) -> list[SamplingGuide]:
    """AdaptiveDrag's CLoss while sampling (``closs_weight > 0``), confined to the editable region when there is
    one."""
    p = edit.params
    if p["closs_weight"] <= 0:
        return []
    where = None
    if edit.mask is not None:
        where = F.interpolate(edit.mask[None, None].float(), size=edit.latent.shape[-2:], mode="nearest")
    rows = (edit.grid[0], edit.latent.shape[-2])
    return [CorrespondenceGuide.from_params(p, edit.handles, edit.targets, rows, where)]


def sample(
    edit: DiffusionEdit, z_edit: Tensor, guides: list[SamplingGuide], reports: list[dict[str, float]]
) -> Tensor:
    """Denoise the edited latent from the drag's timestep to the end with mutual self-attention. The source branch is
    read from its recorded inputs when they are in hand (``source_kv=inversion``, a ``source_cache`` hit) and the
    edited branch denoised alone; otherwise the batch ``[source, edited]`` is denoised, as DragDiffusion's code does
    and as sampling-time parts (CLoss) need, and when the source is to be kept (``source_cache``) its half's inputs
    are recorded from that same pass."""
    engine, p = edit.engine, edit.params
    with edit.prof.stage("sampling"):
        source = edit.source
        common = dict(mutual=edit.mutual, progress=edit.progress, autocast_mode=p["autocast"])
        if source is not None:
            _, z = engine.denoise(z_edit, edit.embeds, edit.start, source=source, **common)
        else:
            source = {} if edit.cache_key is not None else None
            _, z = engine.denoise(
                z_edit,
                edit.embeds,
                edit.start,
                z_src=edit.latent,
                guides=guides,
                feature_block=p["feature_block"],
                grid=edit.grid,
                reports=reports,
                record_source=source,
                **common,
            )
    if edit.cache_key is not None and not edit.cache_hit:
        engine.source_cache.put(edit.cache_key, edit.latent, source)
    return z


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


# ---- alternate drag and denoise (GoodDrag) ---------------------------------------------------------------------


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


# ---- warp, then sample (FastDrag) ------------------------------------------------------------------------------


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


# ---- guide while sampling (LucidDrag) ---------------------------------------------------------------------------


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


register_driver(
    Driver(
        "drag",
        optimize_then_sample,
        "optimize the latent with the drag loop, then sample with mutual self-attention (DragDiffusion and its kin)",
    )
)
register_driver(
    Driver(
        "alternate",
        alternate_drag_denoise,
        "drag a little at each of the first timesteps of the sampling, one denoising step between (GoodDrag)",
        reads_source_branch=True,
    )
)
register_driver(
    Driver(
        "warp",
        warp_then_sample,
        "no optimization; the latent warped in one step along the drags, then sampled (FastDrag)",
    )
)
register_driver(
    Driver(
        "guidance",
        guide_while_sampling,
        "no optimization; sampling-time parts guide the denoising (LucidDrag)",
        options=GuidanceOptions,
        reads_source_branch=True,
    )
)

register(
    Param(
        "repair_strength",
        float,
        0.0,
        "sampler=warp: re-generate the warp's seams and stretched places from this fraction of the schedule (0: off; "
        "more than inversion_strength), the moved content at the targets and everything outside the region kept",
        "engine:diffusion",
        min=0,
        max=1,
        group="warp",
    ),
    Param(
        "repair_keep",
        float,
        4.0,
        "repair_strength: radius (supervision-grid px) around each target kept as the warp left it",
        "engine:diffusion",
        min=0,
        group="warp",
    ),
    Param(
        "repair_band",
        int,
        1,
        "repair_strength: latent cells the repaired region reaches beyond the editable region's edge",
        "engine:diffusion",
        min=0,
        group="warp",
    ),
    Param(
        "drag_phases",
        int,
        7,
        "sampler=alternate: the number of timesteps, from the drag's on, each with a drag phase before its denoising "
        "step (GoodDrag's drag_end_step)",
        "engine:diffusion",
        min=1,
        max=1000,
        group="sampling",
    ),
    Param(
        "sampler",
        str,
        "drag",
        "diffusion: how the method uses the engine (its driver): "
        + "; ".join(f"{d.name}: {d.summary}" for d in DRIVERS.values()),
        "engine:diffusion",
        choices=tuple(DRIVERS),
        group="sampling",
        common=True,
    ),
)


def check_options(driver: Driver, options: Any, method: str) -> None:
    """Options only for the driver that takes them, of its type."""
    if options is None:
        return
    if driver.options is None or not isinstance(options, driver.options):
        raise ParameterError(
            f"{type(options).__name__}: only for methods whose sampler takes them; {method} uses sampler={driver.name}"
        )
