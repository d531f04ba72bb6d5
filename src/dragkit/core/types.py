"""The request and result types every interface shares.

Points are ``(x, y)`` in pixels of the source image everywhere outside the math (x to the right, y down, pixel
centres at integer coordinates, valid range ``0 <= x <= W - 1`` and ``0 <= y <= H - 1``). One function,
:class:`dragkit.core.geometry.GridMap`, converts them to ``(row, col)`` on a feature grid.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError
from .limits import max_pairs

Point = tuple[float, float]


def _as_point(p: Any, what: str) -> Point:
    try:
        x, y = (float(v) for v in p)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a pair of numbers (x, y), got {p!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"{what} must be finite, got ({x}, {y})")
    return (x, y)


@dataclass
class DragRequest:
    """One drag edit: an image, handle→target pairs, an optional mask, a prompt and a seed.

    Args:
        image: the source image (RGB; other modes are converted, alpha is dropped).
        handles: handle points ``(x, y)`` in image pixels.
        targets: one target per handle, same convention.
        mask: optional ``(H, W)`` array, 1 (or True, or > 0.5) where the image may change. ``None``: no mask.
        prompt: text describing the image (used by diffusion engines; ignored by GANs).
        seed: seed of every random choice the edit makes.
        edit_prompt: text saying what the edit should achieve (CLIPDrag's CLIP guidance; diffusion engines only).
            Empty: the drag alone.
    """

    image: Image.Image
    handles: Sequence[Point]
    targets: Sequence[Point]
    mask: np.ndarray | None = None
    prompt: str = ""
    seed: int = 42
    edit_prompt: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.image, Image.Image):
            raise InputError(f"image must be a PIL image, got {type(self.image).__name__}")
        if self.image.mode != "RGB":
            self.image = self.image.convert("RGB")
        w, h = self.image.size
        if w < 2 or h < 2:
            raise InputError(f"image is {w}x{h} pixels; it needs at least 2x2")
        limit = max_pairs()
        for kind, pts in (("handles", self.handles), ("targets", self.targets)):
            if hasattr(pts, "__len__") and len(pts) > limit:
                raise InputError(
                    f"{len(pts)} {kind}: one edit takes at most {limit} drag pairs (DRAGKIT_MAX_PAIRS raises it)"
                )
        self.handles = [_as_point(p, f"handle {i + 1}") for i, p in enumerate(self.handles)]
        self.targets = [_as_point(p, f"target {i + 1}") for i, p in enumerate(self.targets)]
        if not self.handles:
            raise InputError("no drag given: add at least one handle→target pair")
        if len(self.handles) != len(self.targets):
            raise InputError(
                f"{len(self.handles)} handles but {len(self.targets)} targets: every handle needs exactly one target"
            )
        for kind, pts in (("handle", self.handles), ("target", self.targets)):
            for i, (x, y) in enumerate(pts):
                if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                    raise InputError(
                        f"{kind} {i + 1} at ({x:g}, {y:g}) is outside the {w}x{h} image "
                        f"(x must be in [0, {w - 1}], y in [0, {h - 1}])"
                    )
        if self.mask is not None:
            self.mask = validate_mask(self.mask, (h, w))
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        for name in ("prompt", "edit_prompt"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the source image."""
        return self.image.size

    @property
    def noop_pairs(self) -> list[int]:
        """Indices of pairs whose handle equals its target (allowed; they ask for no motion)."""
        return [i for i, (p, t) in enumerate(zip(self.handles, self.targets, strict=True)) if p == t]


def validate_mask(mask: Any, hw: tuple[int, int]) -> np.ndarray:
    """Check a user mask against the image's ``(H, W)`` and return it as a boolean array (True = may change)."""
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(f"mask must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.shape != tuple(hw):
        raise InputError(
            f"mask is {arr.shape[1]}x{arr.shape[0]} but the image is {hw[1]}x{hw[0]}: they must be the same size"
        )
    if arr.dtype == bool:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("mask holds NaN or infinite values")
        out = arr > (0.5 if arr.max() <= 1.0 else 127.5)
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr > (0 if arr.max() <= 1 else 127)
    else:
        raise InputError(f"mask has an unsupported dtype {arr.dtype}")
    if not out.any():
        raise InputError("mask is empty: nothing may change. Paint the region that may move, or give no mask")
    return out


@dataclass
class DragResult:
    """What every interface returns and ``OUT.json`` stores.

    ``trajectory`` holds one record per drag-loop step: ``step``, ``handles`` (image pixels, as tracked at that
    step), ``distances`` (to the targets, image pixels), ``losses`` and ``confidences`` (where the tracker gives
    them: one per handle in [0, 1], 1 = sure its content is there). ``params`` is the full parameter set that
    made the edit; ``info`` carries engine facts (model, sizes, inversion error, why the loop stopped, the final
    ``confidences`` where the tracker gives them).
    """

    image: Image.Image
    source: Image.Image
    handles_initial: list[Point]
    targets: list[Point]
    handles: list[Point]
    trajectory: list[dict[str, Any]]
    timings: dict[str, float]
    method: str
    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None
    prompt: str = ""
    seed: int = 42
    edit_prompt: str = ""
    frames: list[tuple[int, Image.Image]] = field(default_factory=list, repr=False)  # (step, image) previews

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the edit (everything but the pixels)."""
        from . import __version__

        return {
            "dragkit": __version__,
            "method": self.method,
            "prompt": self.prompt,
            "edit_prompt": self.edit_prompt,
            "seed": self.seed,
            "params": self.params,
            "points": {
                "handles": [list(p) for p in self.handles_initial],
                "targets": [list(p) for p in self.targets],
                "final_handles": [list(p) for p in self.handles],
            },
            "image_size": list(self.source.size),
            "has_mask": self.mask is not None,
            "info": self.info,
            "timings": self.timings,
            "trajectory": self.trajectory,
            "versions": library_versions(),
        }


def library_versions() -> dict[str, str]:
    """The installed versions of dragkit and the libraries whose numbers a result depends on."""
    out = {}
    for name in ("dragkit", "torch", "numpy", "pillow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out
