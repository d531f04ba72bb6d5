"""``sampler=inpaint``: warp the painted region in pixels, then inpaint what it left (Inpaint4Drag)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...core.errors import InputError
from ...core.loop import DragLoopOutput
from ...engines.diffusion.inpaint import Inpainter
from ...parts.biwarp import bi_warp
from .edit import DiffusionEdit, Outcome


def warp_then_inpaint(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """Inpaint4Drag (Lu & Han, ICCV 2025; its app's way): no inversion and no optimization.

    1. The painted region is warped in pixels along the drags (:func:`dragkit.parts.biwarp.bi_warp`: each pixel of
       the moved region copied from where the backward map says it came from), at the working size; the points are
       rounded to whole pixels there (a handle moves its region only if it lies on one of the region's pixels).
    2. What the region vacated, and a seam along its moved outline (``inpaint_dilate`` px), are inpainted by the
       checkpoint's inpainting UNet (:class:`~dragkit.engines.diffusion.inpaint.Inpainter`: ``inpaint_steps`` at
       ``inpaint_strength``, the LCM-LoRA ``inpaint_lora`` fused, the autoencoder ``inpaint_vae``), from the edit's
       seed, with the request's prompt (Inpaint4Drag's is always empty).
    3. The composite (``inpaint_composite``): ``inpainted``, their app's — the generated pixels inside the inpainted
       region (×255 truncated to uint8), the warped image elsewhere; ``region``, their benchmark's — the generated
       image inside the whole painted region."""
    request, p, engine = edit.request, edit.params, edit.engine
    if request.mask is None:
        raise InputError("inpaint4drag moves the region you paint: give a mask (--mask, or paint it in the app)")
    (W, H), (h, w) = request.size, edit.image.shape[-2:]
    image = request.image if request.size == (w, h) else request.image.resize((w, h), Image.BICUBIC)
    region = np.asarray(Image.fromarray(request.mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
    scale = np.array([w / W, h / H], np.float32)
    handles = np.round(np.asarray(request.handles, np.float32) * scale)
    targets = np.round(np.asarray(request.targets, np.float32) * scale)
    with edit.prof.stage("warp"):
        warp = bi_warp(region, handles, targets, p["inpaint_dilate"])
        warped = warp.apply(np.asarray(image.convert("RGB")))
    edit.info["warp"] = {
        "copied_pixels": len(warp.targets),
        "inpainted_pixels": int(warp.inpaint.sum()),
        "moved": bool(len(warp.targets)),
    }
    with edit.prof.stage("inpaint"):
        generated = Inpainter(engine, engine.family)(
            Image.fromarray(warped),
            warp.inpaint,
            request.prompt,
            steps=p["inpaint_steps"],
            strength=p["inpaint_strength"],
            lora=p["inpaint_lora"],
            vae=p["inpaint_vae"],
            seed=request.seed,
            progress=edit.progress,
        )
    where = (warp.inpaint if p["inpaint_composite"] == "inpainted" else region)[..., None].astype(np.uint8)
    result = (generated * 255).astype(np.uint8) * where + warped * (1 - where)
    out = Image.fromarray(result.astype(np.uint8))
    edit.info["handles_tracked"] = False
    # the forward map takes each handle onto its target (its own drag has all the weight there)
    loop = DragLoopOutput(edit.latent.float(), edit.targets if len(warp.targets) else edit.handles, 0, "warp", [], 0.0)
    return [Outcome(edit.latent, loop, image=out)]
