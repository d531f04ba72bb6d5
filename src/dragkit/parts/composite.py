"""Keeping what must not change: the edited image composited over the source through the editable mask.

A drag may change only the region the user painted (or the automatic mask); every method's sampling or generator
can still disturb pixels outside it (DDIM inversion is not exact, a GAN's latent is global). ``composite=mask``
makes the promise hard: outside the mask the result *is* the source, pixel for pixel. Inpaint4Drag (Lu & Han,
ICCV 2025) keeps its inpainting only inside its mask and composites over the user's mask in its evaluation; here
it is a part any method can use, on either engine.

The edge is feathered inwards: the weight of the edit is 0 outside the mask and rises linearly with a pixel's
distance from the mask's edge (a Euclidean distance transform), reaching 1 at ``composite_feather`` pixels inside.
No pixel outside the mask changes, and the seam is spread over the mask's own rim. ``composite_feather=0`` is a hard
cut.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt

from ..core.params import Param, register

register(
    Param(
        "composite",
        str,
        "none",
        "keep outside the editable mask: none, or mask (the result is the source outside the mask, the edit inside, "
        "blended over composite_feather px inside its edge; needs a mask, painted or mask=auto)",
        "composite",
        choices=("none", "mask"),
        common=True,
    ),
    Param(
        "composite_feather",
        float,
        2.0,
        "composite=mask: pixels inside the mask's edge over which the edit fades in (0 = a hard cut)",
        "composite",
        min=0,
    ),
)


def edit_weight(mask: np.ndarray, feather: float) -> np.ndarray:
    """The edit's weight per pixel, ``(H, W)`` in [0, 1]: 0 outside ``mask`` (bool, True = may change), rising
    linearly with the distance of a pixel's centre from the mask's edge to 1 at ``feather`` pixels (the image's
    border is not an edge)."""
    inside = np.asarray(mask, bool)
    if feather <= 0:
        return inside.astype(np.float32)
    # distance from each inside pixel to the nearest outside one; padding with "inside" keeps the border no edge
    dist = distance_transform_edt(np.pad(inside, 1, constant_values=True))[1:-1, 1:-1]
    return np.clip((dist - 0.5) / feather, 0, 1).astype(np.float32) * inside


def composite(source: Image.Image, edited: Image.Image, mask: np.ndarray, feather: float) -> Image.Image:
    """``edited`` inside ``mask`` and ``source`` outside it, blended by :func:`edit_weight`; same size and mode as
    ``edited``."""
    if source.size != edited.size:
        raise ValueError(f"composite: source {source.size} and edited {edited.size} differ in size")
    if mask.shape != (edited.height, edited.width):
        raise ValueError(f"composite: mask {mask.shape} is not the image's {(edited.height, edited.width)}")
    w = edit_weight(mask, feather)[..., None]
    src = np.asarray(source.convert(edited.mode), np.float32)
    out = np.asarray(edited, np.float32)
    blended = np.where(w > 0, w * out + (1 - w) * src, src)
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))
