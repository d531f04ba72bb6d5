"""Inpaint4Drag's bidirectional warp of a painted region, in pixels (Lu & Han, ICCV 2025; their code's rules).

The user paints a region and drags points inside it. Each outer contour of the region that holds a handle moves:

1. **forward**: every point of the contour, and every pixel of the region, is displaced by an inverse-distance blend
   of the drags of its 4 nearest handles (Shepard weights ``1/(d + 1e-6)``, rounded to whole pixels; one handle: a
   pure translation). The target region is the moved contour, filled;
2. **backward**: every pixel of the target region takes a source pixel, by the same blend over 100 of the moved
   region pixels (evenly spaced in raster order), of where each came from; the copy is nearest-pixel, and sources
   outside the image are dropped;
3. **what to inpaint**: what the region vacated (inside the source region, outside the target region), dilated by a
   ``k × k`` square, plus a ``k``-px line along the moved outline (its seam).

The geometry is OpenCV's (contours, polygon fill, thick outline, dilation), as their code's, so that the warp is
theirs pixel for pixel (``tests/test_oracle_inpaint4drag.py``). Pure numpy/torch on CPU; no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ParameterError
from ..core.params import Param, register

register(
    Param(
        "inpaint_dilate",
        int,
        5,
        "sampler=inpaint: the width (px) of the seam along the moved region's outline and of the square that dilates "
        "the vacated region, both inpainted (Inpaint4Drag's inpaint_ks; an even width grows by 1; 0: neither)",
        "engine:diffusion",
        min=0,
        max=64,
        group="warp",
    )
)

_REFERENCES = 100  # the backward map's reference points
_NEAREST = 4
_EPS = 1e-6


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - a dependency of dragkit[diffusion]
        raise ParameterError(
            "Inpaint4Drag's warp needs OpenCV: pip install opencv-python-headless (dragkit[diffusion] has it)"
        ) from None
    return cv2


def blend_displacements(points: torch.Tensor, refs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """``points`` (N, 2) moved by the inverse-distance blend of the displacements ``dirs`` at ``refs`` (M, 2): the 4
    nearest references, weights ``1/(d + 1e-6)`` normalised, over at most 100 references evenly spaced in their order;
    rounded to whole pixels. One reference: a translation by its displacement, not rounded."""
    if len(points) == 0 or len(refs) == 0:
        return points
    if len(refs) == 1:
        return points + dirs
    if len(refs) > _REFERENCES:
        keep = torch.linspace(0, len(refs) - 1, _REFERENCES).long()
        refs, dirs = refs[keep], dirs[keep]
    dist, near = torch.topk(torch.cdist(points, refs), min(_NEAREST, len(refs)), dim=1, largest=False)
    w = 1.0 / (dist + _EPS)
    w = w / w.sum(dim=1, keepdim=True)
    return torch.round(points + (w[..., None] * dirs[near]).sum(dim=1)).float()


def _filled(contour: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A closed polygon (K, 2) filled as OpenCV fills it: its pixels as ``[x, y]`` in raster order, and the mask."""
    cv2 = _cv2()
    mask = np.zeros(shape, np.uint8)
    cv2.drawContours(mask, [contour.reshape(-1, 1, 2)], -1, 255, cv2.FILLED)
    rows, cols = np.where(mask > 0)
    return np.stack([cols, rows], axis=1).astype(np.float32), mask > 0


@dataclass
class BiWarp:
    """The warp of one painted region: ``sources[i]`` (``[x, y]``) is copied to ``targets[i]``; ``inpaint`` (H, W) is
    what the inpainting regenerates; ``source_region`` and ``target_region`` the region before and after."""

    sources: np.ndarray
    targets: np.ndarray
    inpaint: np.ndarray
    source_region: np.ndarray
    target_region: np.ndarray

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The image (H, W, C) with every target pixel copied from its source (read from the original); pixels the
        region left keep their colour (the inpainting regenerates them)."""
        out = image.copy()
        out[self.targets[:, 1], self.targets[:, 0]] = image[self.sources[:, 1], self.sources[:, 0]]
        return out


def bi_warp(region: np.ndarray, handles: np.ndarray, targets: np.ndarray, kernel_size: int = 5) -> BiWarp:
    """Inpaint4Drag's bidirectional warp (the module docstring) of the painted ``region`` (H, W; > 0 = painted) along
    the drags ``handles → targets`` ((N, 2) ``[x, y]`` pixels). A contour moves only if a handle is exactly one of
    its filled pixels; a region no handle lies in stays, and is not inpainted."""
    cv2 = _cv2()
    shape = region.shape[:2]
    h_all = torch.as_tensor(np.asarray(handles, np.float32)).reshape(-1, 2)
    t_all = torch.as_tensor(np.asarray(targets, np.float32)).reshape(-1, 2)
    k = max(0, int(kernel_size))
    if k > 0 and k % 2 == 0:
        k += 1
    contours = cv2.findContours((region > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    src_region, dst_region = np.zeros(shape, bool), np.zeros(shape, bool)
    seam = np.zeros(shape, np.uint8)
    sources, dests = [], []
    H, W = shape
    for contour in contours:
        poly = contour[:, 0, :]
        pixels, inside = _filled(poly, shape)
        pix = torch.from_numpy(pixels)
        holds = torch.cdist(h_all, pix).min(dim=1).values < _EPS if len(pix) else torch.zeros(len(h_all), dtype=bool)
        if not bool(holds.any()):
            continue
        h, d = h_all[holds], t_all[holds] - h_all[holds]
        moved_poly = blend_displacements(torch.from_numpy(poly).float(), h, d)
        landed = blend_displacements(pix, h, d)
        moved = moved_poly.int().numpy()
        dst_pixels, dst_inside = _filled(moved, shape)
        if len(dst_pixels) == 0:
            continue
        if k > 0:
            cv2.drawContours(seam, [moved.reshape(-1, 1, 2)], -1, 1, thickness=k)
        came_from = blend_displacements(torch.from_numpy(dst_pixels), landed, pix - landed)
        ok = (came_from[:, 0] >= 0) & (came_from[:, 0] < W) & (came_from[:, 1] >= 0) & (came_from[:, 1] < H)
        if bool(ok.any()):
            sources.append(came_from[ok])
            dests.append(torch.from_numpy(dst_pixels)[ok])
            src_region |= inside
            dst_region |= dst_inside
    if not sources:
        empty = np.zeros((0, 2), np.int32)
        return BiWarp(empty, empty, np.zeros(shape, bool), src_region, dst_region)
    vacated = (src_region & ~dst_region).astype(np.uint8)
    if k > 0:
        vacated = cv2.dilate(vacated, np.ones((k, k), np.uint8))
    return BiWarp(
        torch.cat(sources).numpy().astype(np.int32),
        torch.cat(dests).numpy().astype(np.int32),
        (vacated | seam) > 0,
        src_region,
        dst_region,
    )


__all__ = ["BiWarp", "bi_warp", "blend_displacements"]
