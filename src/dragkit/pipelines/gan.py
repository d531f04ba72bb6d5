"""``DragGANPipeline``: drag editing on a GAN generator (DragGAN and any method preset that runs on GANs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..engines.gan import BUNDLED, GANCode, GANEngine
from ..errors import ParameterError
from ..geometry import GridMap
from ..loop import FeatureOutput, drag_loop
from ..methods import adam, build_parts, get_method
from ..parts import FeatureMaskTerm
from ..types import DragRequest, DragResult

logger = logging.getLogger(__name__)


def to_tensor(image: Image.Image, size: int) -> Tensor:
    """PIL RGB → ``(1, 3, size, size)`` in [-1, 1] (bilinear resize when needed)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    a = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    return a.permute(2, 0, 1)[None]


def to_pil(x: Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """``(1, 3, h, w)`` in [-1, 1] → PIL RGB, resized to ``size`` = ``(W, H)`` when given."""
    a = ((x[0].detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(a)
    return im.resize(size, Image.BILINEAR) if size is not None and im.size != tuple(size) else im


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

    def __init__(self, engine: GANEngine) -> None:
        self.engine = engine

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = BUNDLED) -> DragGANPipeline:
        return cls(GANEngine.from_pretrained(name_or_path))

    def to(self, device: str | torch.device) -> DragGANPipeline:
        self.engine.to(device)
        return self

    @property
    def resolution(self) -> int:
        return self.engine.resolution

    @torch.no_grad()
    def generate(self, seed: int) -> GANSample:
        code = self.engine.sample_z(seed)
        return GANSample(to_pil(self.engine.synthesize(code)), code, seed)

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
            callback: receives the loop's dict per step, plus ``handles_xy`` (image pixels).
            cancel: polled once per step; True stops the edit early (the result is the latent so far).
            progress: show tqdm bars.
            record_frames: keep ``(step, image)`` every this many steps (and the last) in ``result.frames``.
            **overrides: any parameter by its stable name (``r_p=6``); see ``dragkit edit --help-params``.
        """
        m = get_method(method)
        if m.engine != "gan":
            raise ParameterError(f"method {method!r} runs on the {m.engine} engine, not on a GAN")
        if overrides.get("mask", "none") != "none":
            raise ParameterError("pass the mask in the DragRequest (mask=...) rather than as a parameter")
        params = m.resolve(overrides)
        if request.mask is not None:
            params["mask"] = "given"
        lb, fb = params["latent_block"], params["feature_block"]
        self.engine.check_blocks(lb, fb)
        timings: dict[str, float] = {}
        info: dict[str, Any] = {"engine": "gan", "model": self.engine.name}
        t_all = time.perf_counter()

        res = self.engine.resolution
        W, H = request.size
        gm = GridMap((H, W), (res, res))
        info.update(engine_resolution=res, grid_size=[res, res])
        noop = request.noop_pairs
        if noop:
            logger.warning("pairs %s have the handle on the target: nothing to move there", [i + 1 for i in noop])
            info["noop_pairs"] = [i + 1 for i in noop]

        t = time.perf_counter()
        if code is None:
            inv = self.engine.invert(
                to_tensor(request.image, res).to(self.engine.device),
                latent_block=lb,
                steps=params["invert_steps"],
                restarts=params["invert_restarts"],
                seed=request.seed,
                progress=progress,
            )
            code = inv.code
            info["inversion_psnr"] = round(inv.psnr, 3)
            info["source"] = "inverted"
        else:
            code = self.engine.advance(code, lb)
            info["source"] = "generated"
        timings["invert"] = time.perf_counter() - t

        mask = None
        if request.mask is not None:
            mask = gm.resize_mask(torch.from_numpy(request.mask)).to(self.engine.device)

        def features(latent: Tensor) -> FeatureOutput:
            return FeatureOutput(self.engine.features(latent, lb, fb, (res, res)))

        frames: list[tuple[int, Image.Image]] = []

        def on_step(ev: dict[str, Any]) -> None:
            ev["handles_xy"] = gm.to_image(ev["handles"]).tolist()
            if record_frames and (ev["step"] % record_frames == 0 or ev["final"]):
                frames.append((ev["step"], to_pil(self.engine.synthesize(GANCode(ev["latent"], lb)), request.size)))
            if callback is not None:
                callback(ev)

        parts = build_parts(params, terms=[FeatureMaskTerm.from_params(params)])
        # DragGAN's points live on integer pixels of the feature map resized to the image.
        h0 = torch.round(gm.to_grid(request.handles))
        t0 = gm.to_grid(request.targets)
        t = time.perf_counter()
        out = drag_loop(
            code.tensor,
            features,
            h0,
            t0,
            tracker=parts.tracker,
            supervision=parts.supervision,
            schedule=parts.schedule,
            terms=parts.terms,
            optimizer=adam(params["latent_lr"]),
            mask=mask,
            callback=on_step,
            cancel=cancel,
            disable=None if progress else True,
            total=params["drag_steps"],
        )
        timings["drag"] = time.perf_counter() - t
        t = time.perf_counter()
        image = to_pil(self.engine.synthesize(GANCode(out.latent, lb)), request.size)
        timings["decode"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        info.update(steps=out.steps, stop_reason=out.stop_reason)

        trajectory = []
        for rec in out.trajectory:
            rec = dict(rec)
            rec["handles"] = [[round(v, 3) for v in p] for p in gm.to_image(torch.tensor(rec["handles"])).tolist()]
            d = (torch.tensor(request.targets, dtype=torch.float64) - torch.tensor(rec["handles"])).norm(dim=-1)
            rec["distances"] = [round(v, 3) for v in d.tolist()]
            rec["losses"] = {k: round(v, 6) for k, v in rec["losses"].items()}
            trajectory.append(rec)
        final = [tuple(round(v, 3) for v in p) for p in gm.to_image(out.handles).tolist()]
        return DragResult(
            image=image,
            source=request.image,
            handles_initial=list(request.handles),
            targets=list(request.targets),
            handles=final,
            trajectory=trajectory,
            timings={k: round(v, 4) for k, v in timings.items()},
            method=method,
            params=params,
            info=info,
            mask=request.mask,
            frames=frames,
        )
