"""``dragkit demo``: real drag edits, offline: dragkit's own recipes, ``dragkit-gan`` on the bundled DCGAN face
generator and the same drag with ``dragkit`` on ``faces64``, our own diffusion model of faces, editing the face as an
image (the recipes and why: ``docs/dragkit_recipe.md``)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..core.geometry import drag_region
from ..core.types import DragRequest, DragResult
from ..utils.io import save_result, write_bytes_atomic, write_png
from ..utils.viz import captioned, draw_points, gif_bytes, side_by_side

logger = logging.getLogger(__name__)

# A generated face and drags chosen by eye on it (image pixels of the 64×64 face).
DEMO_SEED = 27
DEMO_HANDLES = [(32.0, 49.0)]
DEMO_TARGETS = [(32.0, 44.0)]
DEMO_WHAT = "open the mouth wider by dragging the upper lip up"
SCALE = 4
GAN_METHOD = "dragkit-gan"
DIFFUSION_METHOD = "dragkit"
# the region a user would paint around the drag, for both halves (without one, the recipes use the automatic mask)
MASK_RADIUS = 8.0


def run_demo(out: Path, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Generate the demo face, drag it with ``dragkit-gan``, write before/after, a trajectory GIF and the JSON; then
    the same drag with ``dragkit`` on ``faces64`` (``faces64_*`` files) when diffusers is installed.

    Also measures the edits independently (MD with LPIPS-AlexNet features) when the LPIPS weights are installed.
    """
    from ..core.errors import InputError
    from ..pipelines import DragGANPipeline

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"demo output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    pipe = DragGANPipeline.from_pretrained()
    face = pipe.generate(DEMO_SEED)
    pairs = list(zip(DEMO_HANDLES, DEMO_TARGETS, strict=True))
    mask = drag_region((face.image.height, face.image.width), pairs, MASK_RADIUS)
    req = DragRequest(face.image, DEMO_HANDLES, DEMO_TARGETS, mask=mask, seed=DEMO_SEED)
    echo(
        f"demo: {DEMO_WHAT} (DCGAN face, seed {DEMO_SEED}, method {GAN_METHOD}, the region a user would paint: "
        f"{MASK_RADIUS:g} px around the drag)"
    )
    result = pipe(req, method=GAN_METHOD, code=face.code, progress=progress, record_frames=1)
    summary = _summary(req, result)
    source = json.dumps({"source": "dcgan-faces", "seed": DEMO_SEED})  # a re-edit of it defaults to the GAN
    write_png(out / "before.png", face.image, {"dragkit": source})
    save_result(result, out / "after.png")
    write_png(out / "before_after.png", _pair(req, result))
    by_step = {r["step"]: r for r in result.trajectory}
    frames = [draw_points(req.image, req.handles, req.targets, scale=SCALE)]  # the source, then each step
    frames += [
        draw_points(im, [tuple(p) for p in by_step[step]["handles"]], req.targets, scale=SCALE)
        for step, im in result.frames
    ]
    write_bytes_atomic(out / "trajectory.gif", gif_bytes(frames))
    echo(_message(summary))
    written = ["before.png", "after.png", "after.json", "before_after.png", "trajectory.gif"]

    diffusion = _faces64_drag(req, progress, echo)
    if diffusion is not None:
        write_png(out / "faces64_before_after.png", _pair(req, diffusion))
        save_result(diffusion, out / "faces64_after.png")
        summary["faces64"] = diffusion.info["demo"]
        written += ["faces64_after.png", "faces64_after.json", "faces64_before_after.png"]
    echo(f"demo: wrote {', '.join(written)} to {out}")
    logger.debug(json.dumps(summary))
    return summary


def _faces64_drag(req: DragRequest, progress: bool, echo: Callable[[str], None]) -> DragResult | None:
    """The demo's drag with ``dragkit`` on ``faces64``; None (with a notice) without diffusers."""
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        echo("demo: diffusers is not installed; skipping the faces64 drag (pip install 'dragkit[diffusion]')")
        return None
    from ..pipelines import DragDiffusionPipeline

    echo(
        f"demo: the same drag with {DIFFUSION_METHOD} on faces64 (our diffusion model of faces, editing the face as "
        "an image), in the same region"
    )
    pipe = DragDiffusionPipeline.from_pretrained("faces64", progress=progress)
    pipe.set_progress_bar_config(disable=True if not progress else None, leave=False)
    result = pipe(req, method=DIFFUSION_METHOD, progress=progress)
    echo(_message(_summary(req, result)))
    return result


def _summary(req: DragRequest, result: DragResult) -> dict:
    """Steps, stop reason, time, and MD before/after measured independently (LPIPS-AlexNet features)."""
    summary = {
        "what": DEMO_WHAT,
        "method": result.method,
        "steps": result.info["steps"],
        "stop_reason": result.info["stop_reason"],
        "final_handles": result.handles,
        "seconds": result.timings["total"],
    }
    try:
        from ..bench.metrics import AlexFeatures, mean_distance

        ex = AlexFeatures()
        summary["md_before"] = round(mean_distance(req.image, req.image, req.handles, req.targets, ex).mean, 2)
        summary["md_after"] = round(mean_distance(req.image, result.image, req.handles, req.targets, ex).mean, 2)
        summary["md_features"] = ex.name
        if req.mask is not None:
            from ..bench.metrics import lpips_distance

            keep = (~req.mask).astype("float32")
            summary["lpips_outside_mask"] = round(lpips_distance(req.image, result.image, weight=keep), 4)
            score = _realism()(req.image, result.image, req.mask, req.handles, req.targets)
            summary["realism"], summary["torn"] = round(score.distance, 4), score.torn
    except Exception as e:
        logger.warning("independent MD not measured (%s)", e)
    result.info["demo"] = summary
    return summary


@functools.cache
def _realism():
    """The realism measure with the DCGAN reference faces, built once for both halves."""
    from ..bench.metrics import PatchRealism, reference_faces

    return PatchRealism(reference_faces())


def _message(summary: dict) -> str:
    msg = f"demo: {summary['steps']} steps ({summary['stop_reason']}) in {summary['seconds']:.1f} s"
    if "md_after" in summary:
        msg += (
            f"; independent MD {summary['md_before']} px before -> {summary['md_after']} px after (how far the "
            "content under each handle is from its target, found by LPIPS-AlexNet features, not by the method)"
        )
    if "lpips_outside_mask" in summary:
        msg += f"; LPIPS outside the mask {summary['lpips_outside_mask']}"
    if "realism" in summary:
        msg += (
            f"; realism in the mask {summary['realism']} (each patch's distance to the nearest real one, 0 = as "
            f"real as the source{', flagged as torn' if summary['torn'] else ''})"
        )
    return msg


def _pair(req: DragRequest, result: DragResult):
    """Before and after, labelled: the red dot is the handle (before: where the user clicked; after: where the
    method says the content now is), the blue one the target."""
    return side_by_side(
        [
            captioned(
                draw_points(req.image, req.handles, req.targets, scale=SCALE),
                ["before", "red: handle, blue: target"],
            ),
            captioned(
                draw_points(result.image, result.handles, req.targets, scale=SCALE),
                [f"after ({result.method})", "red: where the handle ended"],
            ),
        ]
    )
