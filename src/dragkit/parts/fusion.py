"""Gradient fusion parts: how the loop combines the gradients of several term groups (``dragkit.core.loop``'s
``fusion``). CLIPDrag's global-local motion supervision (Jiang, Wang, Chen, ICLR 2025, §3.2) is the first: the
local gradient of the drag (motion supervision and the mask term) and the global gradient of a CLIP loss on the
edit prompt are combined by the angle between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.params import Param, default, register

GLMS_FORMS = ("projection", "code")  # how glms fuses the two gradients (see glms)

register(
    Param(
        "fusion_form",
        str,
        "projection",
        "glms: projection (the paper's: drop the part of the global gradient that opposes the local one) or code "
        "(the authors' code: the global gradient scaled by sin θ when the angle is acute, by cos θ when obtuse)",
        "fusion",
        choices=GLMS_FORMS,
    ),
    Param("fusion_lambda", float, 0.7, "glms: weight λ of the global (CLIP) gradient", "fusion", min=0),
)

LOCAL_GROUP = "motion"  # the drag: motion supervision and the mask term
GLOBAL_GROUP = "clip"  # the edit prompt's CLIP term


def glms(
    local: Tensor, global_: Tensor, form: str = default("fusion_form"), lam: float = default("fusion_lambda")
) -> Tensor:
    """Fuse a local gradient ``g_l`` and a global one ``g_g`` (same shape) by the angle ``θ`` between them.

    - ``projection``: ``g = g_l + λ·(g_g − min(0, ⟨g_g, ĝ_l⟩)·ĝ_l)``. Aligned or orthogonal, the global gradient is
      added whole; opposed, its component along ``g_l`` (the part that would undo the drag) is removed and only the
      orthogonal rest is added.
    - ``code``: ``g = g_l + λ·sin θ·g_g`` when ``cos θ ≥ 0``, else ``g_l + λ·cos θ·g_g``.

    A zero global gradient gives ``g_l`` exactly, as does a zero local one in neither form's opposed branch.
    """
    gl, gg = local.flatten().double(), global_.flatten().double()
    nl, ng = gl.norm(), gg.norm()
    if float(ng) == 0.0:
        return local.clone()
    if float(nl) == 0.0:  # no drag direction to measure an angle against: the global gradient as it is
        return local + lam * global_
    cos = torch.clamp(gl @ gg / (nl * ng), -1.0, 1.0)
    if form == "projection":
        along = gl @ gg / nl  # signed length of g_g along ĝ_l
        kept = gg - torch.clamp(along, max=0.0) * gl / nl
        fused = gl + lam * kept
    elif form == "code":
        scale = torch.sqrt(1 - cos**2) if cos >= 0 else cos
        fused = gl + lam * scale * gg
    else:
        raise ValueError(f"unknown fusion form {form!r}: projection or code")
    return fused.reshape(local.shape).to(local.dtype)


@dataclass(frozen=True)
class GlobalLocalFusion:
    """CLIPDrag's global-local motion supervision as a loop fusion part: the ``motion`` group's gradient is the
    local one, the ``clip`` group's the global one (:func:`glms`); any other group is added as it is. Without a
    ``clip`` gradient (no edit prompt) the result is exactly the sum of the others — the drag alone."""

    form: str = default("fusion_form")
    lam: float = default("fusion_lambda")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> GlobalLocalFusion:
        return cls(form=p["fusion_form"], lam=p["fusion_lambda"])

    def __call__(self, grads: Mapping[str, Tensor], ctx: Any) -> Tensor:
        rest = [g for k, g in grads.items() if k not in (LOCAL_GROUP, GLOBAL_GROUP)]
        local = grads.get(LOCAL_GROUP)
        if local is None:
            local = torch.zeros_like(next(iter(grads.values())))
        fused = glms(local, grads[GLOBAL_GROUP], self.form, self.lam) if GLOBAL_GROUP in grads else local
        for g in rest:
            fused = fused + g
        return fused


FUSIONS = {"glms": GlobalLocalFusion}

register(
    Param(
        "fusion",
        str,
        "none",
        "gradient-fusion part: none (sum the losses) or glms (CLIPDrag)",
        "fusion",
        choices=("none", *FUSIONS),
    )
)


def build_fusion(p: Mapping[str, Any]) -> GlobalLocalFusion | None:
    """The fusion part a resolved parameter set names (``None``: the loop sums the losses)."""
    return None if p["fusion"] == "none" else FUSIONS[p["fusion"]].from_params(p)
