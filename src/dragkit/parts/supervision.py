"""Motion-supervision parts: the loss that moves content one small step towards each target."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..geometry import inside, patch_offsets, sample
from ..loop import DragContext
from ..params import Param, register

register(
    Param("supervision", str, "patch", "motion-supervision part", "loop", choices=("patch",)),
    Param("r_m", int, 1, "motion-supervision patch radius (supervision-grid pixels)", "supervision", min=0),
    Param(
        "patch_shape",
        str,
        "square",
        "shape of the motion-supervision patch: square (DragDiffusion) or disc (DragGAN)",
        "supervision",
        choices=("square", "disc"),
    ),
)


@dataclass(frozen=True)
class PatchSupervision:
    """Patch-L1 motion supervision (DragGAN, Pan et al. 2023, eq. 1; DragDiffusion, Shi et al. 2024, eq. 3).

    For every active handle ``p_i`` with unit direction ``d_i`` towards its target::

        L_i = n · mean_{q ∈ Ω1(p_i, r_m), c} | F(q + d_i) − sg(F(q)) |

    with ``F(q + d_i)`` sampled bilinearly at sub-pixel positions (``grid_sample``) and ``n`` the number of
    offsets in the full patch. This is DragDiffusion's reduction, the sum over patch positions of the
    channel-mean L1; positions outside the grid are left out but ``n`` stays the full count (as in their code).
    ``L = Σ_i L_i``. Handles that have arrived (``active`` False) are left out.
    """

    r_m: int = 1
    shape: Literal["square", "disc"] = "square"

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> PatchSupervision:
        return cls(r_m=p["r_m"], shape=p["patch_shape"])

    def loss(self, features: Tensor, handles: Tensor, active: Tensor, ctx: DragContext) -> Tensor:
        grid = tuple(features.shape[-2:])
        offsets = patch_offsets(self.r_m, self.shape)
        total = features.new_zeros(())
        for i in torch.nonzero(active).flatten().tolist():
            d = ctx.targets[i] - handles[i]
            d = d / d.norm().clamp_min(1e-12)
            q = handles[i] + offsets
            keep = inside(q, grid) & inside(q + d, grid)
            if not keep.any():
                continue
            q = q[keep]
            src = sample(features, q).detach()
            dst = sample(features, q + d)
            total = total + len(offsets) * (dst - src).abs().mean()
        return total


SUPERVISIONS = {"patch": PatchSupervision}
