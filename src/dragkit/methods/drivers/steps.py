"""The pieces drivers share: the drag loop on the inverted latent (its terms, parts and stage), FastDrag's warp as
a starting point, CLoss while sampling, and the sampling from the drag's timestep with mutual self-attention."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.loop import DragContext, DragLoopOutput, drag_loop
from ...core.protocols import SamplingGuide
from ...engines.diffusion import gradient_checkpointing, weights_require_grad
from ...parts import ClipGuidanceTerm, CorrespondenceGuide, LatentMaskTerm, load_clip
from ...parts.warp import warp_on_grid
from ..method import adam, build_parts
from .edit import DiffusionEdit


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
                    bundle,
                    req.edit_prompt,
                    p["clip_weight"],
                    p["clip_loss"],
                    edit.source_image,
                    req.prompt,
                    p["clip_preprocess"],
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

    every = edit.record_frames
    W, H = edit.request.size

    def on_step(ev: dict[str, Any]) -> None:
        ev.update(extra, step=offset + ev["step"])
        ev["handles_xy"] = edit.grid_map.to_image(ev["handles"]).tolist()
        z = ev.get("latent")  # a preview of what the latent would denoise to (not of a bottleneck: its own shape)
        if every and z is not None and z.shape == edit.latent.shape and (ev["step"] % every == 0 or ev["final"]):
            frame = engine.preview_image(z, edit.timestep, edit.embeds, p["preview_vae"], (H, W))
            edit.frames.append((ev["step"], frame))
            ev["preview"] = frame
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


def loop_features(edit: DiffusionEdit, denoised: bool, clip: bool) -> Any:
    """The drag loop's feature function at the edit's timestep (:meth:`DiffusionEngine.features_at`): the feature
    block on the supervision grid, the one-step denoise when ``denoised`` (the mask term), the decoded x0-prediction
    for ``clip``; as :func:`loop_terms` says they are needed."""
    p = edit.params
    return edit.engine.features_at(
        edit.timestep,
        edit.embeds,
        p["feature_block"],
        edit.grid,
        denoised=denoised,
        x0_image=clip,
        autocast_mode=p["autocast"],
    )


def drag(edit: DiffusionEdit) -> DragLoopOutput:
    """The shared drag loop on the inverted latent at the edit's timestep, with the parts its parameters name: the
    UNet's weights frozen (the backward computes the latent's gradient only), the forward stopped at the feature
    block unless a term needs the noise prediction.

    With ``init=warp`` the loop starts from FastDrag's warp of the inverted latent (:func:`warped`), its handles
    where the warp moved them, its templates (``F₀``) from the un-warped latent: the warp does the drag and the loop
    only finishes what it left (usually nothing: the handles start on their targets)."""
    p = edit.params
    terms, denoised, clip = loop_terms(edit)
    features = loop_features(edit, denoised, clip)
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
            edit.params["warp_field"],
            edit.params["warp_band"] * edit.grid[0] / edit.grid_map.image_size[0],  # image px → grid px
            edit.params["warp_radius"],
            edit.params["warp_region"],
        )
    edit.info["warp"] = {
        "region_cells": cells,
        "fill": edit.params["warp_fill"],
        "sample": edit.params["warp_sample"],
        "field": edit.params["warp_field"],
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
