"""Extra loss terms added to motion supervision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..loop import DragContext, FeatureOutput
from ..params import Param, register

register(
    Param("lam", float, 0.1, "weight of the mask (background) term; used only when a mask is given", "terms", min=0)
)


@dataclass(frozen=True)
class FeatureMaskTerm:
    """DragGAN's background term on features (Pan et al. 2023, eq. 1, second term).

    ``lam · mean |(F − F₀) ⊙ (1 − M)|`` over channels and grid, with ``M`` the mask on the supervision grid
    (1 = may change). Returns ``None`` (no term) when no mask is given.
    """

    lam: float = 10.0
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
