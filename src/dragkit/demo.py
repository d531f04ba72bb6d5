"""``dragkit demo``: a real drag edit, offline, on the bundled DCGAN face generator."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from .io import save_result, write_bytes_atomic, write_png
from .types import DragRequest
from .viz import draw_points, gif_bytes, side_by_side

logger = logging.getLogger(__name__)

# A generated face and drags chosen by eye on it (image pixels of the 64×64 face).
DEMO_SEED = 27
DEMO_HANDLES = [(32.0, 49.0)]
DEMO_TARGETS = [(32.0, 44.0)]
DEMO_WHAT = "open the mouth wider by dragging the upper lip up"
SCALE = 4


def run_demo(out: Path, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Generate the demo face, drag it with ``draggan``, write before/after, a trajectory GIF and the JSON.

    Also measures the edit independently (MD with LPIPS-AlexNet features) when the LPIPS weights are installed.
    """
    from .errors import InputError
    from .pipelines import DragGANPipeline

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"demo output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    pipe = DragGANPipeline.from_pretrained()
    face = pipe.generate(DEMO_SEED)
    req = DragRequest(face.image, DEMO_HANDLES, DEMO_TARGETS, seed=DEMO_SEED)
    echo(f"demo: {DEMO_WHAT} (DCGAN face, seed {DEMO_SEED}, method draggan)")
    result = pipe(req, code=face.code, progress=progress, record_frames=5)
    summary = {
        "what": DEMO_WHAT,
        "steps": result.info["steps"],
        "stop_reason": result.info["stop_reason"],
        "final_handles": result.handles,
        "seconds": result.timings["total"],
    }
    try:
        from .metrics import AlexFeatures, mean_distance

        ex = AlexFeatures()
        summary["md_before"] = round(mean_distance(face.image, face.image, req.handles, req.targets, ex).mean, 2)
        summary["md_after"] = round(mean_distance(face.image, result.image, req.handles, req.targets, ex).mean, 2)
        summary["md_features"] = ex.name
    except Exception as e:
        logger.warning("independent MD not measured (%s)", e)
    result.info["demo"] = summary

    write_png(out / "before.png", face.image)
    save_result(result, out / "after.png")
    pair = side_by_side(
        [
            draw_points(face.image, req.handles, req.targets, scale=SCALE),
            draw_points(result.image, result.handles, req.targets, scale=SCALE),
        ]
    )
    write_png(out / "before_after.png", pair)
    by_step = {r["step"]: r for r in result.trajectory}
    frames = [
        draw_points(im, [tuple(p) for p in by_step[step]["handles"]], req.targets, scale=SCALE)
        for step, im in result.frames
    ]
    write_bytes_atomic(out / "trajectory.gif", gif_bytes(frames))
    msg = f"demo: {summary['steps']} steps ({summary['stop_reason']}) in {summary['seconds']:.1f} s"
    if "md_after" in summary:
        msg += f"; independent MD {summary['md_before']} px before -> {summary['md_after']} px after"
    echo(msg)
    echo(f"demo: wrote {out}/before.png, after.png, after.json, before_after.png, trajectory.gif")
    logger.debug(json.dumps(summary))
    return summary
