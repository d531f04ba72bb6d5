"""RegionDrag's region-to-region copy and paste of latents (Lu, Li & Han, ECCV 2024): a drag becomes dense
correspondences between latent cells, and at every denoising step the handle cells' content of the **inversion's**
trajectory is pasted onto the target cells, in one pass, no optimization.

Read from the released code (``Visual-AI/RegionDrag`` @ dba97d9: ``utils/drag.py``, ``utils/cycle_sde.py``,
``utils/ui_utils.py``), on the latent grid in ``(x, y)`` cells, as their code indexes a latent ``z[0, :, y, x]``:

- **Points.** A handle or target pixel is the cell under it (their ``pixel // 8``).
- **Region + points** (their UI's third tab, :func:`region_cells`): the mask is resized to the latent grid (OpenCV's
  bilinear resize of 0/1), each of its outer contours is a region, and the pairs whose handle cell lies in it move it:
  the contour's corners and the region's cells move by inverse-distance weighting (IDW, in float16) of the 4 nearest
  handle drags; the moved contour, filled, is the target region, and each of its cells is mapped back to a source
  cell by IDW of the moved cells' way back. Source cells may repeat; pairs leaving the grid are dropped.
- **Handle noise** (:func:`handle_noise`): before denoising, the handle cells become
  ``√(1 − s²)·z + s·r`` (``s ≥ 1``: pure noise ``s·r``), one draw ``r`` of shape ``(C, K)``.
- **Copy and paste** (:func:`copy_paste`): ``z[target] = H[source]``, ``H`` the inversion's latent at that step; then
  optionally ``z = where(mask, z, H)`` (their benchmark's blend).
- **SDE inversion and its reverse** (:func:`sde_up`, :func:`sde_noise`, :func:`sde_down`): each inversion step
  re-noises the latent forward by a fixed stride with a fresh draw, and keeps the noise that makes the reverse
  stochastic step (η = 1) land exactly on the latent it came from; the denoising reuses those noises in reverse
  order. All in float32 with 0-d ``ᾱ`` tensors, in their order of operations (bit for bit on CPU).

The self-attention keys and values of every layer come from the inversion's UNet call at the mirrored step: that
is the engine's recording and mutual self-attention (``dragkit.engines.diffusion.attention``), used by the driver
``sampler=region`` (``dragkit.methods.drivers.region``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.errors import ParameterError
from ..core.params import Param, register

REGION_FROM = ("auto", "points", "mask")
REGION_BLENDS = ("none", "mask")

register(
    Param(
        "region_from",
        str,
        "auto",
        "sampler=region: how the drag becomes latent-cell correspondences: points (each handle's cell copied to its "
        "target's, RegionDrag's drag of points), mask (the painted region moved by the points: RegionDrag's "
        "'region + points' mapping, inverse-distance weighted, needs OpenCV) or auto (mask when one is painted, "
        "else points)",
        "engine:diffusion",
        choices=REGION_FROM,
        group="region",
        common=True,
    ),
    Param(
        "region_noise",
        float,
        0.6,
        "sampler=region: noise put on the handle cells before denoising, s: sqrt(1 - s^2)·z + s·noise; 1 or more: "
        "pure noise (RegionDrag's handle noise scale: 0.6 in its UI, 1.0 in its benchmark)",
        "engine:diffusion",
        min=0,
        max=10,
        group="region",
    ),
    Param(
        "region_blend",
        str,
        "none",
        "sampler=region: none, or mask (at each step the latent outside the painted mask is the inversion's, as "
        "RegionDrag's benchmark runs; with composite=mask and composite_feather=0 its result)",
        "engine:diffusion",
        choices=REGION_BLENDS,
        group="region",
    ),
    Param(
        "region_copy_end",
        float,
        0.0,
        "sampler=region: no copy-paste in the last int(region_copy_end·inference_steps) steps of the schedule. 0: "
        "at every step, as RegionDrag's code runs (its end_t 0.2 never takes effect); 0.2 is its paper's end",
        "engine:diffusion",
        min=0,
        max=1,
        group="region",
    ),
)


# ---- correspondences -------------------------------------------------------------------------------------------


def point_cells(points: Sequence[tuple[float, float]], scale: tuple[float, float], size: tuple[int, int]) -> Tensor:
    """The latent cell ``(x, y)`` under each point ``(x, y)`` (image pixels): the point times ``scale`` (latent
    cells per image pixel, ``(x, y)``), floored (RegionDrag's ``pixel // 8``), in a grid of ``size = (h, w)``.
    Returns ``(K, 2)`` long."""
    p = np.asarray(points, np.float64).reshape(-1, 2) * np.asarray(scale, np.float64)
    cells = np.floor(p).astype(np.int64)
    h, w = size
    cells[:, 0] = cells[:, 0].clip(0, w - 1)
    cells[:, 1] = cells[:, 1].clip(0, h - 1)
    return torch.from_numpy(cells)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ParameterError(
            "region_from=mask maps the painted region with OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2


def idw(points: np.ndarray, refs: np.ndarray, moves: np.ndarray, most: int = 100) -> np.ndarray:
    """Each of ``points`` ``(P, 2)`` moved by the inverse-distance-weighted mean move of its 4 nearest ``refs``
    ``(R, 2)`` (their moves ``(R, 2)``), ``w = 1/(d + 1e-4)``, rounded half to even; in float16, as RegionDrag's code
    computes it (on the CPU here). With one reference every point moves by its move, truncated; more than ``most``
    references are thinned to ``most`` evenly spaced ones. Returns ``(P, 2)`` int32."""
    p = torch.from_numpy(np.ascontiguousarray(points)).half()
    r = torch.from_numpy(np.ascontiguousarray(refs)).half()
    m = torch.from_numpy(np.ascontiguousarray(moves)).half()
    if len(r) < 2:
        return (p + m).int().numpy()
    if len(r) > most:
        keep = torch.linspace(0, len(r) - 1, steps=most).long()
        r, m = r[keep], m[keep]
    dist = torch.norm(p[:, None] - r[None], dim=-1)
    order = torch.sort(dist, dim=1)[1][:, : min(4, len(r))]
    near = torch.gather(m[None].expand(len(p), -1, -1), 1, order[..., None].expand(-1, -1, m.shape[-1]))
    inverse = 1 / (torch.gather(dist, 1, order) + 1e-4)
    weight = inverse / inverse.sum(dim=1, keepdim=True)
    return (p + (weight[..., None] * near).sum(dim=1)).round().int().numpy()


def _filled(cv2, contour: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The cells ``(x, y)`` (row-major, int32) of ``contour`` ``(P, 2)`` filled by OpenCV on a grid of ``size``."""
    canvas = np.zeros(size, np.uint8)
    cv2.drawContours(canvas, [contour.reshape(-1, 1, 2).astype(np.int32)], -1, color=255, thickness=cv2.FILLED)
    return np.column_stack(np.nonzero(canvas)).astype(np.int32)[:, ::-1].copy()


def region_cells(mask: np.ndarray, handles: Tensor, targets: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """RegionDrag's "region + points" correspondences: ``mask`` ``(H, W)`` (True = the region) resized to the latent
    ``size = (h, w)`` (OpenCV bilinear on 0/1, nonzero kept), ``handles``/``targets`` ``(K, 2)`` latent cells ``(x,
    y)``. Each outer contour with a handle cell inside moves as the module docstring says. Returns the source and
    target cells ``(M, 2)`` long ``(x, y)``, in their copy order; ``M`` is 0 when no handle lies in the region."""
    cv2 = _cv2()
    h, w = size
    small = cv2.resize(np.asarray(mask, np.uint8), (w, h))
    contours = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    a, b = handles.numpy().astype(np.int32), targets.numpy().astype(np.int32)
    sources, dests = [np.zeros((0, 2), np.int32)], [np.zeros((0, 2), np.int32)]
    for contour in contours:
        outline = contour[:, 0, :]
        cells = _filled(cv2, outline, size)
        inside = (a[:, None] == cells[None]).all(-1).any(-1)
        if not inside.any():
            continue
        src, dst = a[inside], b[inside]
        moved_outline = idw(outline, src, dst - src)
        moved_cells = idw(cells, src, dst - src)
        target = _filled(cv2, moved_outline, size)
        source = idw(target, moved_cells, cells - moved_cells)
        ok = (source[:, 0] >= 0) & (source[:, 0] < w) & (source[:, 1] >= 0) & (source[:, 1] < h)
        ok &= (target[:, 0] >= 0) & (target[:, 0] < w) & (target[:, 1] >= 0) & (target[:, 1] < h)
        sources.append(source[ok])
        dests.append(target[ok])
    return torch.from_numpy(np.concatenate(sources)).long(), torch.from_numpy(np.concatenate(dests)).long()


# ---- the latent ------------------------------------------------------------------------------------------------


def _last_write(cells: Tensor) -> Tensor:
    """Indices of ``cells`` ``(K, 2)`` keeping the last occurrence of each repeated cell, in order (what an indexed
    assignment with repeats leaves on the CPU, made deterministic on any device)."""
    keys = cells[:, 1] * (int(cells[:, 0].max()) + 1) + cells[:, 0]
    last = {int(k): i for i, k in enumerate(keys.tolist())}
    return torch.tensor(sorted(last.values()), dtype=torch.long)


def handle_noise(z: Tensor, cells: Tensor, scale: float, noise: Tensor) -> Tensor:
    """The handle cells ``(K, 2)`` ``(x, y)`` of ``z`` ``(1, C, h, w)`` re-noised: ``√(1 − s²)·z + s·noise`` (``s ≥
    1``: ``s·noise``), ``noise`` ``(C, K)``; a repeated cell takes its last entry. Returns a new latent."""
    keep = (1 - scale**2) ** 0.5 if scale < 1 else 0
    x, y = cells[:, 0].to(z.device), cells[:, 1].to(z.device)
    values = z[0, :, y, x] * keep + noise.to(z) * scale
    last = _last_write(cells).to(z.device)
    out = z.clone()
    out[0, :, y[last], x[last]] = values[:, last]
    return out


def copy_paste(z: Tensor, known: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """``z`` with each ``target`` cell set to ``known``'s ``source`` cell (``(K, 2)`` ``(x, y)``); a repeated target
    takes its last source. Returns a new latent."""
    last = _last_write(target)
    s, t = source[last].to(z.device), target[last].to(z.device)
    out = z.clone()
    out[0, :, t[:, 1], t[:, 0]] = known[0, :, s[:, 1], s[:, 0]]
    return out


def sde_up(x: Tensor, a_from: Tensor, a_to: Tensor, noise: Tensor) -> Tensor:
    """One forward (noising) step from ``ᾱ_from`` to the later ``ᾱ_to``: ``√(ᾱ_to/ᾱ_from)·x +
    √(1 − ᾱ_to/ᾱ_from)·noise``, in ``x``'s precision with 0-d ``ᾱ`` tensors."""
    return (a_to / a_from) ** 0.5 * x + (1 - a_to / a_from) ** 0.5 * noise


def sde_sigma(a_t: Tensor, a_prev: Tensor) -> Tensor:
    """DDPM's (η = 1) standard deviation of the step from ``ᾱ_t`` to the earlier ``ᾱ_prev``."""
    return ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5


def sde_noise(x: Tensor, x_up: Tensor, eps: Tensor, a_from: Tensor, a_to: Tensor) -> Tensor:
    """The noise that makes :func:`sde_down` from ``x_up`` (at ``ᾱ_to``, predicted noise ``eps``) land on ``x`` (at
    ``ᾱ_from``): what an SDE inversion keeps for the reverse pass."""
    sigma = ((1 - a_from) / (1 - a_to)) ** 0.5 * (1 - a_to / a_from) ** 0.5
    x0 = (x_up - (1 - a_to) ** 0.5 * eps) / a_to**0.5
    return (x - a_from**0.5 * x0 - (1 - a_from - sigma**2) ** 0.5 * eps) / sigma


def sde_down(z: Tensor, eps: Tensor, a_t: Tensor, a_prev: Tensor, noise: Tensor) -> Tensor:
    """One stochastic (η = 1) DDIM step from ``ᾱ_t`` to ``ᾱ_prev`` with the given ``noise``: ``√ᾱ_prev·x̂₀ +
    √(1 − ᾱ_prev − σ²)·ε + σ·noise``."""
    sigma = sde_sigma(a_t, a_prev)
    x0 = (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_prev**0.5 * x0 + (1 - a_prev - sigma**2) ** 0.5 * eps + sigma * noise
