"""``DragGANPipeline``: drag editing on a GAN generator (DragGAN and any method preset that runs on GANs)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..core.errors import ParameterError
from ..core.geometry import GridMap
from ..core.loop import DragContext, FeatureOutput
from ..core.types import DragRequest, DragResult
from ..engines.gan import BUNDLED, GANCode, GANEngine, StyleGANEngine, load_engine
from ..engines.gan.engine import to_pil
from ..parts import FeatureMaskTerm
from ..parts.warp import warp_on_grid
from ..utils.profiler import StageProfiler
from .common import editable_mask, make_result, noop_pairs, resolve_params, run_preset_loop

logger = logging.getLogger(__name__)


def to_tensor(image: Image.Image, size: int) -> Tensor:
    """PIL RGB → ``(1, 3, size, size)`` in [-1, 1] (bilinear resize when needed)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    a = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    return a.permute(2, 0, 1)[None]


# The bundled face GAN refits its own faces at 22-32 dB and DragBench's photos (30 of them, every category, human
# heads included) at 14-25 dB, most under 21 (measured with the default 300 steps × 8 restarts).
POOR_FIT_PSNR = 21.0


def fit_warnings(size: tuple[int, int], res: int, psnr: float, family: str = "dcgan") -> list[str]:
    """What a user should know when a GAN was handed their image: it is larger than the generator's resolution
    (edited there, the result scaled back), or the generator reproduces it poorly (not an image like the ones it
    makes, so the edit changes a lookalike). Each suggests what fits better."""
    out = []
    instead = (
        "a diffusion method keeps the detail (dragkit; faces64 as its model for a face)"
        if family == "dcgan"
        else "a diffusion method keeps the detail"
    )
    if max(size) > res:
        out.append(
            f"the GAN works at {res}×{res}: this {size[0]}×{size[1]} image is edited at that size and the result "
            f"scaled back (blurred); {instead}"
        )
    if psnr < POOR_FIT_PSNR:
        own = "; its own faces: 22-32 dB" if family == "dcgan" else ""
        out.append(
            f"the GAN reproduces this image poorly (inversion PSNR {psnr:.1f} dB{own}): the edit changes a lookalike; "
            + (
                "a diffusion method edits the image itself (dragkit; faces64 as its model for a face)"
                if family == "dcgan"
                else "invert_method=pti fits it closer (the generator tuned to it), a diffusion method edits it itself"
            )
        )
    return out


@dataclass
class GANSample:
    """A generated image and the exact code that made it (edit it with ``pipe(request, code=sample.code)``)."""

    image: Image.Image
    code: GANCode
    seed: int


class DragGANPipeline:
    """Drag editing on a GAN.

    Example::

        pipe = DragGANPipeline.from_pretrained("dcgan-faces")
        face = pipe.generate(seed=3)
        req = DragRequest(face.image, handles=[(40, 44)], targets=[(46, 44)])
        out = pipe(req, code=face.code)          # or without code=: the image is inverted first
        out.image.save("edited.png")

    A user image is first fitted (inverted) into the generator; ``result.info["inversion_psnr"]`` reports how
    well. Images of another size are resized to the generator's resolution for the edit and the result back to
    the input size; points are mapped both ways, so they are always in input-image pixels.
    """

    def __init__(self, engine: GANEngine | StyleGANEngine) -> None:
        self.engine = engine

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = BUNDLED) -> DragGANPipeline:
        """``"dcgan-faces"`` (bundled), DCGAN weights (``.safetensors``/torch), a StyleGAN2 ``.pkl`` (read safely)
        or a StyleGAN2 folder in dragkit's layout (:func:`~dragkit.engines.gan.load_engine`)."""
        return cls(load_engine(name_or_path))

    def to(self, device: str | torch.device) -> DragGANPipeline:
        self.engine.to(device)
        return self

    @property
    def resolution(self) -> int:
        return self.engine.resolution

    @torch.no_grad()
    def generate(self, seed: int) -> GANSample:
        """An image from ``seed`` and the exact code that made it (on a StyleGAN, the image DragGAN shows for the
        seed: its z, truncation 0.7)."""
        code = self.engine.sample_z(seed)
        return GANSample(to_pil(self.engine.synthesize(code)), code, seed)

    def _code(
        self,
        request: DragRequest,
        code: GANCode | None,
        params: dict[str, Any],
        res: int,
        progress: bool,
        cancel: Callable[[], bool] | None = None,
    ) -> tuple[GANCode, dict[str, Any], GANEngine | StyleGANEngine]:
        """The code to edit and the engine to edit it on: the given code as the drag's latent, or the request's image
        fitted (``invert_method``; with ``pti`` the engine is a copy whose generator was tuned to the image; a cancel
        ends the fit early and the info says how many of its steps ran)."""
        if code is not None:
            return self.engine.edit_code(code, params), {"source": "generated"}, self.engine
        inv = self.engine.fit(
            to_tensor(request.image, res).to(self.engine.device),
            params,
            seed=request.seed,
            progress=progress,
            cancel=cancel,
        )
        info = {
            "source": "inverted",
            "inversion_method": params["invert_method"],
            "inversion_psnr": round(inv.psnr, 3),
            "inversion_steps": inv.steps,
        }
        if inv.steps < inv.planned:
            info["inversion_stopped"] = f"cancelled after {inv.steps} of {inv.planned} steps"
        else:
            warnings = fit_warnings(request.size, res, inv.psnr, self.engine.family)
            for w in warnings:
                logger.warning("%s", w)
            if warnings:
                info["warnings"] = warnings
        return inv.code, info, inv.engine or self.engine

    @torch.no_grad()
    def __call__(
        self,
        request: DragRequest,
        *,
        method: str = "draggan",
        code: GANCode | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        progress: bool = True,
        record_frames: int = 0,
        **overrides: Any,
    ) -> DragResult:
        """Run one drag edit.

        Args:
            request: image, points, mask, seed (the prompt is ignored by GANs).
            method: a method preset running on the GAN engine (``draggan``).
            code: the generator code of ``request.image`` if it was generated (skips inversion).
            callback: receives the loop's dict per step, plus ``handles_xy`` (image pixels) and, on the steps
                where a frame is recorded, ``preview`` (the image so far).
            cancel: polled once per step of the inversion and of the drag; True stops the edit early (the result
                is the latent so far; an inversion cut short is reported in ``info["inversion_stopped"]``).
            progress: show tqdm bars.
            record_frames: keep ``(step, image)`` every this many steps (and the last) in ``result.frames``.
            **overrides: any parameter by its stable name (``r_p=6``); see ``dragkit edit --help-params``.
        """
        params = resolve_params(method, "gan", request, overrides, self.engine.model_defaults(), self.engine.family)
        lb, fb = params["latent_block"], params["feature_block"]
        self.engine.check_blocks(lb, fb)
        prof = StageProfiler(self.engine.device)
        info: dict[str, Any] = {"engine": "gan", "model": self.engine.name, "generator": self.engine.family}

        res = self.engine.resolution
        W, H = request.size
        gm = GridMap((H, W), (res, res))
        info.update(engine_resolution=res, grid_size=[res, res])
        info.update(noop_pairs(request))

        with prof.stage("invert"):
            code, inv_info, engine = self._code(request, code, params, res, progress, cancel)
        info.update(inv_info)

        def features(latent: Tensor) -> FeatureOutput:
            return FeatureOutput(engine.features(code.with_tensor(latent), fb, (res, res)))

        # DragGAN's points live on integer pixels of the feature map resized to the image.
        handles, targets = torch.round(gm.to_grid(request.handles)), gm.to_grid(request.targets)
        mask, image_mask = editable_mask(request, params, features, code.tensor, handles, targets, gm, info, prof)
        if mask is not None:
            mask = mask.to(engine.device)

        frames: list[tuple[int, Image.Image]] = []

        def on_step(ev: dict[str, Any]) -> None:
            ev["handles_xy"] = gm.to_image(ev["handles"]).tolist()
            if record_frames and (ev["step"] % record_frames == 0 or ev["final"]):
                frames.append((ev["step"], to_pil(engine.synthesize(code.with_tensor(ev["latent"])), request.size)))
                ev["preview"] = frames[-1][1]  # for live previews (the web app)
            if callback is not None:
                callback(ev)

        start, context = code.tensor, None
        if params["init"] == "warp":  # FastDrag's warp of the generator's spatial code; templates from the unwarped
            start, handles, context = self._warped(code.tensor, features, handles, targets, mask, params, info, prof)
        with prof.stage("drag"):
            out = run_preset_loop(
                start,
                features,
                handles,
                targets,
                params,
                [FeatureMaskTerm.from_params(params)],
                mask=mask,
                callback=on_step,
                cancel=cancel,
                progress=progress,
                context=context,
            )
        with prof.stage("decode"):
            image = to_pil(engine.synthesize(code.with_tensor(out.latent)), request.size)
        return make_result(
            request, image, out, gm, method=method, params=params, info=info, prof=prof, frames=frames, mask=image_mask
        )

    def _warped(
        self,
        code: Tensor,
        features: Callable[[Tensor], FeatureOutput],
        handles: Tensor,
        targets: Tensor,
        mask: Tensor | None,
        params: dict[str, Any],
        info: dict[str, Any],
        prof: StageProfiler,
    ) -> tuple[Tensor, Tensor, DragContext]:
        """``init=warp`` on a GAN: the code entering ``latent_block`` is a spatial map, so FastDrag's warp moves the
        editable region's content along the drags on it in one step (:func:`dragkit.parts.warp.warp_on_grid`); the
        loop starts there, its handles where the warp put them, its templates from the code before the warp."""
        if code.ndim != 4 or min(code.shape[-2:]) < 2:
            raise ParameterError(
                f"init=warp needs a spatial code: latent_block={params['latent_block']} gives one of shape "
                f"{tuple(code.shape)}; use latent_block=1 or more"
            )
        res = self.engine.resolution
        with prof.stage("warp"):
            start, moved, cells = warp_on_grid(
                code,
                handles,
                targets,
                mask,
                (res, res),
                params["warp_fill"],
                params["warp_sample"],
                params["warp_field"],
                params["warp_band"],  # the grid is the image's pixels
                params["warp_radius"],
            )
        info["warp"] = {
            "region_cells": cells,
            "fill": params["warp_fill"],
            "sample": params["warp_sample"],
            "field": params["warp_field"],
            "code_shape": list(code.shape[1:]),
        }
        with torch.no_grad():
            initial = features(code).detached()
        return start, moved, DragContext(initial, handles.clone(), targets, mask)
