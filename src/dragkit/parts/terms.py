"""Extra loss terms added to motion supervision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..core.loop import DragContext, FeatureOutput
from ..core.params import Param, default, register

register(
    Param(
        "lam",
        float,
        0.1,
        "weight of the mask (background) term; used only when a mask is given",
        "terms",
        min=0,
        common=True,
    )
)


@dataclass(frozen=True)
class FeatureMaskTerm:
    """DragGAN's background term on features (Pan et al. 2023, eq. 1, second term).

    ``lam · mean |(F − F₀) ⊙ (1 − M)|`` over channels and grid, with ``M`` the mask on the supervision grid
    (1 = may change). Returns ``None`` (no term) when no mask is given.
    """

    lam: float = default("lam")
    name: str = "mask"
    group: str = "motion"

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> FeatureMaskTerm:
        return cls(lam=p["lam"])

    def __call__(self, out: FeatureOutput, ctx: DragContext) -> Tensor | None:
        if ctx.mask is None or self.lam == 0:
            return None
        keep = (1 - ctx.mask).to(out.features)
        return self.lam * ((out.features - ctx.features0).abs() * keep).mean()


@dataclass(frozen=True)
class LatentMaskTerm:
    """DragDiffusion's mask term on one-step-denoised latents (Shi et al. 2024, eq. 5; their code's form).

    ``lam · Σ |x_{t−1}(ẑ) − x_{t−1}(z₀)| ⊙ (1 − M)`` summed over the ``4 × h × w`` latent, with ``x_{t−1}`` the DDIM
    one-step denoise the engine puts in ``FeatureOutput.denoised`` and ``M`` the supervision-grid mask
    nearest-resized to the latent grid. ``None`` (no term) without a mask: DragDiffusion has no background term then.
    """

    lam: float = default("lam")
    name: str = "mask"
    group: str = "motion"

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> LatentMaskTerm:
        return cls(lam=p["lam"])

    def __call__(self, out: FeatureOutput, ctx: DragContext) -> Tensor | None:
        if ctx.mask is None or self.lam == 0 or out.denoised is None or ctx.initial.denoised is None:
            return None
        prev, prev0 = out.denoised, ctx.initial.denoised
        m = F.interpolate(ctx.mask[None, None].float(), size=prev.shape[-2:], mode="nearest").to(prev)
        return self.lam * ((prev - prev0).abs() * (1 - m)).sum()
