"""Drag datasets behind one interface: a list of :class:`Sample` (an id, a category, the image, the points, the
mask and the prompt), read from three formats.

- **DragBench** (Shi et al., CVPR 2024): ``<category>/<sample>/original_image.png`` and ``meta_data.pkl`` (a dict
  with ``prompt``, ``points`` — handle, target, handle, target, ... as ``[x, y]`` — and ``mask``, ``(H, W)`` with 1
  where the image may change). The pickle is read with :class:`dragkit.utils.io.RestrictedUnpickler`: plain data and
  numpy arrays only, so a crafted file cannot run code.
- **GoodDrag / Drag100**: ``<category>/<sample>/original.jpg`` (or ``.png``), ``mask.png`` (white = may change)
  and ``points.json`` (``{"points": [[x, y], ...]}``, handle and target alternating; an optional ``prompt``). A
  folder of samples without categories reads as the category ``default``.
- **dragkit result bundles** (what ``dragkit bench`` writes; :mod:`dragkit.bench`): ``samples/<category>/<sample>/``
  with ``source.png``, ``sample.json`` (points, prompt) and optionally ``mask.png``. A run reads back as the
  dataset it was made from, so a run can be re-run or evaluated on its own.

:func:`open_dataset` tells the formats apart by what the folder holds.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.types import DragRequest, Point
from ..utils.io import image_size, load_image, load_mask, safe_unpickle

FORMATS = ("dragbench", "drag100", "bundle")


@dataclass
class Sample:
    """One drag task of a dataset. ``image_path`` is read on demand (:meth:`image`)."""

    id: str  # "category/name", unique in its dataset
    category: str
    image_path: Path
    handles: list[Point]
    targets: list[Point]
    prompt: str = ""
    mask: np.ndarray | None = field(default=None, repr=False)
    # a GAN-made sample (dragkit.bench.gan_sets): {"generator": key, "seed": int}, so a GAN method on that generator
    # edits the seed's own code
    generated: dict[str, Any] | None = None

    def image(self) -> Image.Image:
        return load_image(self.image_path)

    def request(self, seed: int = 42, image: Image.Image | None = None) -> DragRequest:
        """The :class:`DragRequest` for this sample (the points and mask are checked against the image here);
        ``image``: the sample's image when already loaded."""
        try:
            return DragRequest(
                image or self.image(), self.handles, self.targets, mask=self.mask, prompt=self.prompt, seed=seed
            )
        except InputError as e:
            raise InputError(f"sample {self.id}: {e}") from None

    def meta(self) -> dict[str, Any]:
        """What a result bundle records about the task (JSON-ready)."""
        return {
            "id": self.id,
            "category": self.category,
            "handles": [list(p) for p in self.handles],
            "targets": [list(p) for p in self.targets],
            "prompt": self.prompt,
            "has_mask": self.mask is not None,
            **({"generated": self.generated} if self.generated else {}),
        }


def safe_id(sid: Any) -> bool:
    """A sample id the bench can turn into folders: ``CATEGORY/NAME``, two plain names (no other separators, no
    ``.`` or ``..``, no control characters). Ids read from a file must pass this before they name a path."""
    if not isinstance(sid, str) or sid.count("/") != 1 or "\\" in sid or len(sid) > 400:
        return False
    return all(part not in ("", ".", "..") and part.isprintable() for part in sid.split("/"))


def split_points(points: Any, where: str) -> tuple[list[Point], list[Point]]:
    """``[[x, y], ...]`` with handle and target alternating → (handles, targets); a clear error otherwise."""
    pts = as_points(points, where)
    if len(pts) % 2:
        raise InputError(f"{where}: {len(pts)} points; handles and targets alternate, so the count must be even")
    return pts[0::2], pts[1::2]


def as_points(points: Any, where: str) -> list[Point]:
    """``[[x, y], ...]`` (numbers, finite, at least one) → a list of points; a clear error naming ``where``."""
    try:
        if isinstance(points, str | bytes | dict) or any(isinstance(p, str | bytes | dict) for p in points):
            raise TypeError
        if any(len(p) != 2 for p in points):
            raise ValueError
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for p in points for v in p):
            raise TypeError  # numbers, not text that looks like one
        pts = [(float(p[0]), float(p[1])) for p in points]
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise InputError(f"{where}: points must be a list of [x, y] pairs") from None
    if not pts:
        raise InputError(f"{where}: no points")
    if not all(math.isfinite(v) for p in pts for v in p):
        raise InputError(f"{where}: points must be finite numbers (NaN or infinity found)")
    return pts


def _sample_dirs(root: Path, marker: str) -> list[Path]:
    """Folders under ``root`` (one or two levels down) holding ``marker``, sorted."""
    return sorted({p.parent for p in root.glob(f"*/{marker}")} | {p.parent for p in root.glob(f"*/*/{marker}")})


def _category_and_id(root: Path, folder: Path) -> tuple[str, str]:
    rel = folder.relative_to(root)
    category = rel.parts[0] if len(rel.parts) > 1 else "default"
    return category, f"{category}/{rel.parts[-1]}"


def read_dragbench(root: str | os.PathLike) -> list[Sample]:
    """DragBench: every ``<category>/<sample>/`` with ``original_image.png`` and ``meta_data.pkl``."""
    root = Path(root)
    out = []
    for folder in _sample_dirs(root, "meta_data.pkl"):
        category, sid = _category_and_id(root, folder)
        where = str(folder / "meta_data.pkl")
        try:
            meta = safe_unpickle(folder / "meta_data.pkl")
        except Exception as e:  # a refused global, a truncated file: name the file and why
            raise InputError(f"{where}: cannot read it safely ({e})") from None
        if not isinstance(meta, dict) or "points" not in meta:
            raise InputError(f"{where}: expected a dict with 'points', 'mask' and 'prompt'")
        handles, targets = split_points(meta["points"], where)
        mask = meta.get("mask")
        if mask is not None:
            try:
                mask = np.asarray(mask, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{where}: the mask must be an array of numbers") from None
            if mask.ndim == 3:  # some tools save (H, W, 1) or (H, W, 3)
                mask = mask[..., 0]
            if mask.ndim != 2 or mask.size == 0 or not np.isfinite(mask).all():
                raise InputError(f"{where}: the mask must be a 2-D array of finite numbers, got shape {mask.shape}")
            mask = mask > (127 if mask.max() > 1 else 0)
        image = folder / "original_image.png"
        if not image.is_file():
            raise InputError(f"{folder}: no original_image.png beside meta_data.pkl")
        prompt = meta.get("prompt", "")
        out.append(Sample(sid, category, image, handles, targets, str(prompt or ""), mask))
    return out


def read_drag100(root: str | os.PathLike) -> list[Sample]:
    """GoodDrag / Drag100: every folder with ``points.json``, an ``original.jpg`` (or ``.png``) and ``mask.png``."""
    root = Path(root)
    out = []
    for folder in _sample_dirs(root, "points.json"):
        category, sid = _category_and_id(root, folder)
        where = str(folder / "points.json")
        try:
            data = json.loads((folder / "points.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{where}: not readable JSON ({e})") from None
        if not isinstance(data, dict) or "points" not in data:
            raise InputError(f'{where}: expected {{"points": [[x, y], ...]}}')
        handles, targets = split_points(data["points"], where)
        names = ("original.jpg", "original.png", "original.jpeg")
        image = next((folder / n for n in names if (folder / n).is_file()), None)
        if image is None:
            raise InputError(f"{folder}: no original.jpg (or .png) beside points.json")
        mask = None
        if (folder / "mask.png").is_file():
            mask = load_mask(folder / "mask.png", image_size(image))
        out.append(Sample(sid, category, image, handles, targets, str(data.get("prompt", "") or ""), mask))
    return out


def read_bundles(root: str | os.PathLike) -> list[Sample]:
    """dragkit result bundles: ``samples/<category>/<sample>/`` with ``source.png`` and ``sample.json`` (a sample
    whose image could not be read at all has no ``source.png`` and is left out)."""
    root = Path(root)
    base = root / "samples" if (root / "samples").is_dir() else root
    out = []
    for folder in _sample_dirs(base, "sample.json"):
        where = str(folder / "sample.json")
        try:
            meta = json.loads((folder / "sample.json").read_text())
            handles, targets = meta["handles"], meta["targets"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{where}: not a dragkit sample record ({e})") from None
        handles, targets = as_points(handles, f"{where} handles"), as_points(targets, f"{where} targets")
        if len(handles) != len(targets):
            raise InputError(f"{where}: {len(handles)} handles but {len(targets)} targets")
        image = folder / "source.png"
        if not image.is_file():
            continue
        mask = None
        if (folder / "mask.png").is_file():
            mask = load_mask(folder / "mask.png", image_size(image))
        category, sid = meta.get("category", "default"), meta.get("id") or _category_and_id(base, folder)[1]
        if not isinstance(category, str) or not safe_id(sid):
            raise InputError(f"{where}: id {sid!r} / category {category!r}: expected CATEGORY/NAME of plain names")
        generated = meta.get("generated")
        if generated is not None and not (
            isinstance(generated, dict)
            and isinstance(generated.get("generator"), str)
            and isinstance(generated.get("seed"), int)
            and generated["seed"] >= 0
        ):
            raise InputError(f"{where}: generated {generated!r}: expected {{generator: NAME, seed: N}}")
        out.append(Sample(sid, category, image, handles, targets, str(meta.get("prompt", "")), mask, generated))
    return out


def detect_format(root: str | os.PathLike) -> str:
    """``dragbench``, ``drag100`` or ``bundle``, from the files the folder holds."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset {root}: no such folder")
    if (root / "run.json").is_file() or (root / "samples").is_dir():
        return "bundle"
    if _sample_dirs(root, "meta_data.pkl"):
        return "dragbench"
    if _sample_dirs(root, "points.json"):
        return "drag100"
    raise InputError(
        f"dataset {root}: not a DragBench folder (*/*/meta_data.pkl), a Drag100 folder (*/points.json) or a "
        "dragkit run (run.json)"
    )


READERS = {"dragbench": read_dragbench, "drag100": read_drag100, "bundle": read_bundles}


def open_dataset(
    root: str | os.PathLike,
    format: str | None = None,
    categories: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[Sample]:
    """Read a dataset (``format`` detected unless given), keep only ``categories`` when given (an unknown one is
    an error naming the known ones), then the first ``limit`` samples in id order."""
    fmt = format or detect_format(root)
    if fmt not in READERS:
        raise InputError(f"dataset format {fmt!r}: choose one of {', '.join(FORMATS)}")
    samples = sorted(READERS[fmt](root), key=lambda s: s.id)
    if not samples:
        raise InputError(f"dataset {root}: no samples found as {fmt}")
    if categories:
        wanted = list(categories)
        known = sorted({s.category for s in samples})
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise InputError(f"categories {', '.join(unknown)}: not in {root} (it has {', '.join(known)})")
        samples = [s for s in samples if s.category in wanted]
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit {limit}: must be 1 or more")
        samples = samples[:limit]
    return samples


def pair_count(samples: Sequence[Sample]) -> int:
    return sum(len(s.handles) for s in samples)
