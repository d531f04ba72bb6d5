"""Coordinates, patches and sub-pixel sampling on feature grids.

Convention: outside this module points are ``(x, y)`` image pixels; inside the math they are ``(row, col)``
float tensors of shape ``(N, 2)`` on a feature grid of size ``(h, w)``. Pixel centres sit at integer
coordinates on both, so sampling at an integer ``(row, col)`` returns exactly that grid cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class GridMap:
    """Maps ``(x, y)`` image pixels to ``(row, col)`` on a feature grid and back.

    ``convention="center"`` aligns pixel centres (what ``F.interpolate(..., align_corners=False)`` does when a
    feature map is resized to the image): ``col = (x + 0.5) * w / W - 0.5``. ``convention="corner"`` is plain
    scaling, ``col = x * w / W``, which DragDiffusion's reference code uses.
    """

    image_size: tuple[int, int]  # (H, W)
    grid_size: tuple[int, int]  # (h, w)
    convention: Literal["center", "corner"] = "center"

    def _scale(self) -> Tensor:
        (ih, iw), (gh, gw) = self.image_size, self.grid_size
        return torch.tensor([gh / ih, gw / iw], dtype=torch.float64)

    def to_grid(self, xy: Tensor | list) -> Tensor:
        """``(N, 2)`` image ``(x, y)`` → ``(N, 2)`` grid ``(row, col)`` (float64)."""
        xy = torch.as_tensor(xy, dtype=torch.float64).reshape(-1, 2)
        yx = xy.flip(-1)
        s = self._scale()
        return (yx + 0.5) * s - 0.5 if self.convention == "center" else yx * s

    def to_image(self, rc: Tensor) -> Tensor:
        """``(N, 2)`` grid ``(row, col)`` → ``(N, 2)`` image ``(x, y)`` (float64)."""
        rc = torch.as_tensor(rc, dtype=torch.float64).reshape(-1, 2)
        s = self._scale()
        yx = (rc + 0.5) / s - 0.5 if self.convention == "center" else rc / s
        return yx.flip(-1)

    def resize_mask(self, mask: Tensor) -> Tensor:
        """Nearest-resize an ``(H, W)`` mask (1 = may change) to the grid; returns float ``(h, w)``."""
        m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
        return F.interpolate(m, size=self.grid_size, mode="nearest")[0, 0]


def dragdiffusion_points(xy: Sequence[tuple[float, float]], image_size: tuple[int, int], grid_size: tuple[int, int]):
    """``(N, 2)`` grid ``(row, col)`` of image ``(x, y)`` points the way DragDiffusion's code maps them
    (``drag_bench_evaluation/run_drag_diffusion.py``): ``(y / H · h, x / W · w)`` in Python floats, made a float32
    tensor, rounded half to even. The same as ``GridMap(..., "corner")`` followed by rounding, except at the rare
    points where float32 moves a value onto a half (``size_rule=official`` reproduces it exactly). Returns float64."""
    (H, W), (h, w) = image_size, grid_size
    rows = [torch.round(torch.tensor([y / H * h, x / W * w])) for x, y in xy]
    return torch.stack(rows).to(torch.float64)


PATCH_SHAPES = ("square", "disc")


def patch_offsets(radius: int, shape: Literal["square", "disc"] = "square") -> Tensor:
    """Integer ``(row, col)`` offsets of a patch of the given radius, in row-major order.

    ``square``: the ``(2r+1)²`` offsets of DragDiffusion; ``disc``: those with Euclidean norm ≤ r, DragGAN's
    Ω1(p, r1) (Pan et al. 2023, eq. 1).
    """
    if radius < 0:
        raise ValueError(f"patch radius must be ≥ 0, got {radius}")
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    off = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    if shape == "disc":
        off = off[off.norm(dim=-1) <= radius + 1e-9]
    elif shape != "square":
        raise ValueError(f"unknown patch shape {shape!r}: use 'square' or 'disc'")
    return off


def values_at(features: Tensor, rc: Tensor) -> Tensor:
    """The ``(K, C)`` feature vectors of a ``(1, C, h, w)`` map at ``(K, 2)`` integer ``(row, col)`` positions
    (exact values; :func:`sample` interpolates sub-pixel ones)."""
    return features[0, :, rc[:, 0].long(), rc[:, 1].long()].T


def inside(rc: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Boolean mask of positions inside ``[0, h-1] × [0, w-1]``."""
    h, w = grid_size
    return (rc[..., 0] >= 0) & (rc[..., 0] <= h - 1) & (rc[..., 1] >= 0) & (rc[..., 1] <= w - 1)


def sample(features: Tensor, rc: Tensor) -> Tensor:
    """Bilinearly sample ``features`` ``(1, C, h, w)`` at sub-pixel ``(row, col)`` positions ``(..., 2)``.

    Returns ``(..., C)``. Uses ``grid_sample(align_corners=True)``, under which integer positions are exact grid
    cells; positions outside the grid read the border value. Gradients flow to ``features`` (and to ``rc``).
    """
    if features.ndim != 4 or features.shape[0] != 1:
        raise ValueError(f"features must be (1, C, h, w), got {tuple(features.shape)}")
    _, c, h, w = features.shape
    lead = rc.shape[:-1]
    rc = rc.reshape(1, -1, 1, 2).to(features.dtype)
    # grid_sample wants (x, y) in [-1, 1]; with align_corners=True, -1 and 1 are the centres of the end cells.
    gx = rc[..., 1] / max(w - 1, 1) * 2 - 1
    gy = rc[..., 0] / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], -1)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, :, 0].transpose(0, 1).reshape(*lead, c)


def window(center: Tensor, radius: int, grid_size: tuple[int, int]) -> Tensor:
    """Integer positions of the ``(2r+1)²`` search window around ``round(center)``, clipped to the grid.

    Row-major order (rows outer), so an argmin over them picks the first minimum the way DragDiffusion does.
    Returns ``(K, 2)`` float positions; duplicates from clipping are removed.
    """
    h, w = grid_size
    r0, c0 = (int(v) for v in torch.round(center).tolist())
    rows = torch.arange(max(r0 - radius, 0), min(r0 + radius, h - 1) + 1)
    cols = torch.arange(max(c0 - radius, 0), min(c0 + radius, w - 1) + 1)
    if len(rows) == 0 or len(cols) == 0:  # centre far outside the grid: search the nearest cell only
        rows = torch.tensor([min(max(r0, 0), h - 1)])
        cols = torch.tensor([min(max(c0, 0), w - 1)])
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).to(torch.float64)


def drag_region(hw: tuple[int, int], pairs: list[tuple[tuple[float, float], tuple[float, float]]], radius: float):
    """A mask a user might paint for these drags: pixels within ``radius`` of any handle→target segment
    (``(x, y)`` image pixels). Returns an ``(H, W)`` boolean numpy array, True = may change."""
    h, w = hw
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    out = torch.zeros(h, w, dtype=torch.bool)
    for (ax, ay), (bx, by) in pairs:
        dx, dy = bx - ax, by - ay
        u = (((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-9)).clamp(0, 1)
        out |= (xx - ax - u * dx) ** 2 + (yy - ay - u * dy) ** 2 <= radius**2
    return out.numpy()
