"""What every pipeline does the same way around the loop: points back to image pixels, no-op pairs."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.errors import ParameterError
from ..core.geometry import GridMap
from ..core.loop import DragContext, DragLoopOutput, drag_loop
from ..core.types import DragRequest, DragResult, Point
from ..methods import adam, build_parts, get_method
from ..parts.automask import automatic_mask, sam_features
from ..parts.composite import composite
from ..utils.profiler import StageProfiler

logger = logging.getLogger("dragkit")


def resolve_params(
    method: str,
    engine: str,
    request: DragRequest,
    overrides: dict[str, Any],
    model: dict[str, Any] | None = None,
    family: str | None = None,
) -> dict[str, Any]:
    """The full, validated parameter set of ``method`` on this pipeline's ``engine``, with the model's defaults and
    the preset's variant for its ``family`` (:meth:`~dragkit.methods.method.Method.resolve`), then the overrides."""
    m = get_method(method)
    if m.engine != engine:
        raise ParameterError(f"method {method!r} runs on the {m.engine} engine, not on {engine}")
    if overrides.get("mask", "none") not in ("none", "auto"):
        raise ParameterError(
            f"mask={overrides['mask']!r}: pass a mask image in the DragRequest (mask=...); as a parameter, mask is "
            "none or auto"
        )
    if request.edit_prompt.strip() and engine != "diffusion":
        raise ParameterError(
            f"edit prompt {request.edit_prompt!r}: CLIP guidance runs on diffusion methods only, not on {method!r}"
        )
    params = m.resolve(overrides, model, family)
    if request.mask is not None:
        params["mask"] = "given"  # a user's mask wins over the automatic one
    elif params["composite"] == "mask" and params["mask"] != "auto":
        raise ParameterError("composite=mask keeps the image outside the editable mask: paint a mask or set mask=auto")
    return params


def editable_mask(
    request: DragRequest,
    params: dict[str, Any],
    features: Any,
    latent: torch.Tensor,
    handles: torch.Tensor,
    targets: torch.Tensor,
    gm: GridMap,
    info: dict[str, Any],
    prof: StageProfiler,
) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """The mask on the supervision grid (1 = may change) and the image-size mask the result reports: the user's,
    AdaptiveDrag's automatic one (``mask=auto``: superpixels of the initial features, ``dragkit.parts.automask``),
    or none."""
    if request.mask is not None:
        return gm.resize_mask(torch.from_numpy(request.mask)), request.mask
    if params["mask"] != "auto":
        return None, None
    with prof.stage("auto_mask"), torch.no_grad():
        if params["auto_mask_features"] == "sam":  # SAM's embeddings of the input image, at the grid's size
            f = sam_features(request.image, params["sam_model"], latent.device)
            f = F.interpolate(f[None], size=gm.grid_size, mode="bilinear", align_corners=False)
        else:
            f = features(latent).features
        grid_mask = automatic_mask(f, handles, targets, params)
    H, W = gm.image_size
    m = torch.from_numpy(grid_mask).float()
    image_mask = F.interpolate(m[None, None], size=(H, W), mode="nearest")[0, 0].bool().numpy()
    info["auto_mask"] = {"fraction": round(float(image_mask.mean()), 4), "features": params["auto_mask_features"]}
    return m, image_mask


def noop_pairs(request: DragRequest) -> dict[str, Any]:
    """Warn about pairs whose handle sits on its target (allowed; nothing moves there) and report them."""
    noop = request.noop_pairs
    if not noop:
        return {}
    logger.warning("pairs %s have the handle on the target: nothing to move there", [i + 1 for i in noop])
    return {"noop_pairs": [i + 1 for i in noop]}


def image_trajectory(records: list[dict[str, Any]], gm: GridMap, targets: list[Point]) -> list[dict[str, Any]]:
    """The loop's per-step records with handles and distances in image pixels (rounded for the JSON)."""
    t = torch.tensor(targets, dtype=torch.float64)
    out = []
    for rec in records:
        rec = dict(rec)
        xy = gm.to_image(torch.tensor(rec["handles"]))
        rec["handles"] = [[round(v, 3) for v in p] for p in xy.tolist()]
        rec["distances"] = [round(v, 3) for v in (t - xy).norm(dim=-1).tolist()]
        rec["losses"] = {k: round(v, 6) for k, v in rec["losses"].items()}
        if "confidences" in rec:
            rec["confidences"] = [round(v, 4) for v in rec["confidences"]]
        out.append(rec)
    return out


def image_points(rc: torch.Tensor, gm: GridMap) -> list[Point]:
    return [(round(x, 3), round(y, 3)) for x, y in gm.to_image(rc).tolist()]


def run_preset_loop(
    latent: torch.Tensor,
    features: Any,
    handles: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    terms: list[Any],
    *,
    mask: torch.Tensor | None,
    callback: Any,
    cancel: Any,
    progress: bool,
    context: DragContext | None = None,
) -> DragLoopOutput:
    """The shared drag loop with the parts, optimizer and budget a resolved parameter set names (``context``: the
    templates and state handed in, as when the loop starts from a warp of the latent its templates come from)."""
    parts = build_parts(params, terms=terms)
    if context is not None:
        parts.tracker.prepare(context)
    return drag_loop(
        latent,
        features,
        handles,
        targets,
        tracker=parts.tracker,
        supervision=parts.supervision,
        schedule=parts.schedule,
        terms=parts.terms,
        fusion=parts.fusion,
        optimizer=adam(params["latent_lr"]),
        mask=mask,
        callback=callback,
        cancel=cancel,
        disable=None if progress else True,
        total=params["drag_steps"],
        context=context,
    )


def make_result(
    request: DragRequest,
    image: Image.Image,
    out: DragLoopOutput,
    gm: GridMap,
    *,
    method: str,
    params: dict[str, Any],
    info: dict[str, Any],
    prof: StageProfiler,
    frames: list | None = None,
    mask: np.ndarray | None = None,
) -> DragResult:
    """The one result type every pipeline returns (timings from the profiler, points in image pixels). With
    ``composite=mask`` the image is the source outside the editable mask (``dragkit.parts.composite``)."""
    mask = request.mask if mask is None else mask
    if params.get("composite") == "mask" and mask is not None:
        with prof.stage("composite"):
            image = composite(request.image, image, mask, params["composite_feather"])
    info.update(steps=out.steps, stop_reason=out.stop_reason, profile=prof.stages)
    asked = params.get("drag_steps")
    if out.budget is not None and asked is not None and out.budget != asked:  # the schedule grew it: say so
        info["step_budget"] = {
            "asked": asked,
            "final": out.budget,
            "cap": params.get("adaptive_step_cap"),
            "why": "schedule=adaptive adds a step after each step on which a handle moved less than the pace that "
            "brings it to its target within drag_steps, up to adaptive_step_cap",
        }
    if out.trajectory and "confidences" in out.trajectory[-1]:  # the tracker's last word on each handle
        info["confidences"] = [round(v, 4) for v in out.trajectory[-1]["confidences"]]
    timings = prof.timings()
    timings["total"] = sum(v for k, v in timings.items() if k != "load")  # loading happens once per pipeline
    return DragResult(
        image=image,
        source=request.image,
        handles_initial=list(request.handles),
        targets=list(request.targets),
        handles=image_points(out.handles, gm),
        trajectory=image_trajectory(out.trajectory, gm, request.targets),
        timings={k: round(v, 4) for k, v in timings.items()},
        method=method,
        params=params,
        info=info,
        mask=mask,
        prompt=request.prompt,
        edit_prompt=request.edit_prompt,
        seed=request.seed,
        frames=frames or [],
    )
