"""Synthetic edits that validate a realism measure: damage a drag editor can do (a tear, a smear, a duplicate),
changes that are not damage (a small global change of brightness, a small global shift, an invisible blur or noise)
and visible degradations that are neither (a blur of 1 px, noise of ±5 levels).

Each takes the source image and one drag (``(x, y)`` image pixels) and returns a new image of the same size. Sizes
are given for a 64-px image and scaled with the image's longer side, so a DragBench photo gets the same damage
relative to its size. ``scripts/realism_controls.py`` runs them through the candidate measures
(``docs/realism.md``); the tests assert the chosen measure's verdict on them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates

from ..core.types import Point
from .metrics.realism import translated

Control = Callable[[Image.Image, Point, Point], Image.Image]


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.float64)


def _image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def _sample(a: np.ndarray, ys: np.ndarray, xs: np.ndarray, order: int = 1) -> np.ndarray:
    """``a`` ``(H, W, 3)`` at float positions, bilinear (``order=1``) or nearest (0), edges replicated."""
    return np.stack([map_coordinates(a[..., k], [ys, xs], order=order, mode="nearest") for k in range(3)], -1)


def _scale(image: Image.Image) -> float:
    return max(image.size) / 64


def _unit(h: Point, t: Point) -> np.ndarray:
    d = np.subtract(t, h, dtype=np.float64)
    return d / max(float(np.linalg.norm(d)), 1e-9)


def tear(image: Image.Image, handle: Point, target: Point, side: float = 12, shift: float = 5) -> Image.Image:
    """A hard block shift: inside a square of ``side`` px centred on the handle, the content is moved ``shift`` px
    along the drag (nearest pixels); its edges are seams."""
    a, s = _array(image), _scale(image)
    side, shift = side * s, shift * s
    u = _unit(handle, target)
    h, w = a.shape[:2]
    x0, y0 = round(handle[0] - side / 2), round(handle[1] - side / 2)
    ys, xs = np.mgrid[max(0, y0) : min(h, y0 + round(side)), max(0, x0) : min(w, x0 + round(side))]
    out = a.copy()
    out[ys, xs] = _sample(a, np.round(ys - shift * u[1]), np.round(xs - shift * u[0]), order=0)
    return _image(out)


def smear(image: Image.Image, handle: Point, target: Point, width: float = 4) -> Image.Image:
    """The handle's content streaked along the drag: every pixel within ``width`` px of the handle→target segment
    takes the handle's cross-section (what a stretching warp does to a feature)."""
    a, s = _array(image), _scale(image)
    width *= s
    hnd = np.asarray(handle, np.float64)
    u = _unit(handle, target)
    n = np.array([-u[1], u[0]])
    length = float(np.linalg.norm(np.subtract(target, handle)))
    h, w = a.shape[:2]
    ys, xs = np.mgrid[:h, :w]
    p = np.stack([xs, ys], -1) - hnd
    along, across = p @ u, p @ n
    sel = (along >= 0) & (along <= length) & (np.abs(across) <= width)
    src = hnd + across[..., None] * n
    out = a.copy()
    out[sel] = _sample(a, src[..., 1][sel], src[..., 0][sel])
    return _image(out)


def duplicate(image: Image.Image, handle: Point, target: Point, radius: float = 5) -> Image.Image:
    """A copy-pasted feature: the disc of ``radius`` px around the handle pasted at the target, the handle kept."""
    a, s = _array(image), _scale(image)
    radius *= s
    h, w = a.shape[:2]
    ys, xs = np.mgrid[:h, :w]
    sel = (xs - target[0]) ** 2 + (ys - target[1]) ** 2 <= radius**2
    out = a.copy()
    out[sel] = _sample(a, ys[sel] - (target[1] - handle[1]), xs[sel] - (target[0] - handle[0]))
    return _image(out)


def brightness(image: Image.Image, factor: float = 1.06) -> Image.Image:
    """A small global change of brightness (every pixel × ``factor``)."""
    return _image(_array(image) * factor)


def shift(image: Image.Image, dx: float = 2, dy: float = 1) -> Image.Image:
    """The whole image moved by ``(dx, dy)`` px (its edges replicated): content moved, nothing torn."""
    s = _scale(image)
    return translated(image.convert("RGB"), round(dx * s), round(dy * s))


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """A Gaussian blur of ``sigma`` px (scaled with the image)."""
    from PIL import ImageFilter

    return image.filter(ImageFilter.GaussianBlur(sigma * _scale(image)))


def noise(image: Image.Image, amplitude: float, seed: int = 0) -> Image.Image:
    """Uniform noise of ± ``amplitude`` levels on every pixel."""
    a = _array(image)
    return _image(a + np.random.default_rng(seed).uniform(-amplitude, amplitude, a.shape))


DAMAGE: dict[str, Control] = {"tear": tear, "smear": smear, "duplicate": duplicate}
BENIGN: dict[str, Control] = {
    "source": lambda im, h, t: im.copy(),
    "brighter 6%": lambda im, h, t: brightness(im, 1.06),
    "darker 6%": lambda im, h, t: brightness(im, 0.94),
    "shift 2 px": lambda im, h, t: shift(im),
    "blur σ 0.5": lambda im, h, t: blur(im, 0.5),
    "noise ±2": lambda im, h, t: noise(im, 2),
}
# visible but not damage of the kind the measure is for: scored and reported, neither benign nor damage
DEGRADED: dict[str, Control] = {
    "blur σ 1": lambda im, h, t: blur(im, 1.0),
    "noise ±5": lambda im, h, t: noise(im, 5),
}
