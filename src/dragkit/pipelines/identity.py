"""The ``identity`` method: returns the input unchanged. The benchmark harness's own control — on DragBench it must
give MD ≈ the mean drag length (nothing moved) and IF = 1 (nothing changed) — and a cheap way to test the
harness end to end without any model."""

from __future__ import annotations

import time
from typing import Any

from ..core.types import DragRequest, DragResult
from .common import resolve_params


class IdentityPipeline:
    """Same call as the other pipelines; no model, no work."""

    model_name = "none"

    @classmethod
    def from_pretrained(cls, *_args: Any, **_kwargs: Any) -> IdentityPipeline:
        return cls()

    def to(self, *_args: Any, **_kwargs: Any) -> IdentityPipeline:
        return self

    def __call__(self, request: DragRequest, *, method: str = "identity", **overrides: Any) -> DragResult:
        for k in ("progress", "callback", "cancel"):  # the other pipelines' call options: nothing to report here
            overrides.pop(k, None)
        t0 = time.perf_counter()
        params = resolve_params(method, "identity", request, overrides)
        return DragResult(
            image=request.image.copy(),
            source=request.image,
            handles_initial=list(request.handles),
            targets=list(request.targets),
            handles=list(request.handles),
            trajectory=[],
            timings={"total": round(time.perf_counter() - t0, 4)},
            method=method,
            params=params,
            info={"engine": "identity", "model": self.model_name, "steps": 0, "stop_reason": "identity"},
            mask=request.mask,
            prompt=request.prompt,
            seed=request.seed,
        )
