"""Drag sets made by a GAN: each image is the generator's own for a seed, with a seeded drag on it, written as a
dataset ``dragkit bench`` reads (``samples/<handles>/seedNNNN/source.png`` + ``sample.json``). The record keeps the
generator and the seed, so a GAN method benchmarked on the same generator edits the seed's exact code (as DragGAN
does) instead of fitting the picture; any other method edits the picture.

Handles are drawn on distinctive features (the most distinctive of 40 random points of the central region, by
LPIPS-AlexNet features: the one whose best match farther than 4 px away, at 64 px, is weakest) or at random (the
first of them, a flat region as likely as an eye); each drag has a uniform direction and a uniform length."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core.errors import InputError
from ..utils.io import write_json, write_png

HANDLES = ("distinctive", "random")


def distinctive_handle(feat: torch.Tensor, rng: np.random.Generator, candidates: int = 40) -> np.ndarray:
    """The most distinctive of ``candidates`` random points ``(x, y)`` of the central region (from 20/64 to 45/64
    of the side): the one whose feature's best cosine match farther than 4/64 of the side away is weakest. A handle
    on a flat region has look-alikes everywhere and no matcher can tell where it went."""
    c, h, w = feat.shape
    f = torch.nn.functional.normalize(feat.reshape(c, -1), dim=0)
    yy, xx = np.mgrid[:h, :w]
    lo, hi, near = round(20 * w / 64), round(45 * w / 64), (4 * w / 64) ** 2
    best, best_score = None, 2.0
    for _ in range(candidates):
        p = rng.integers(lo, hi, 2)
        sim = (f[:, p[1] * w + p[0]] @ f).reshape(h, w).numpy()
        far = (xx - p[0]) ** 2 + (yy - p[1]) ** 2 > near
        score = float(sim[far].max())
        if score < best_score:
            best, best_score = p, score
    assert best is not None
    return best.astype(float)


def random_drag(
    i: int, feat: torch.Tensor, size: int = 64, length: tuple[float, float] = (4, 12), handles: str = "distinctive"
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Drag ``i`` on a ``size``-px image: a handle (``distinctive`` or ``random``, see the module), a uniform
    direction, a uniform length in ``length`` px, the target rounded to a pixel at least 4/64 of the side inside
    the image (directions that leave it are redrawn). Seeded by ``i`` alone."""
    if handles not in HANDLES:
        raise ValueError(f"handles={handles!r}: choose {' or '.join(HANDLES)}")
    rng = np.random.default_rng(1000 + i)
    h = distinctive_handle(feat, rng, candidates=40 if handles == "distinctive" else 1)
    margin = round(4 * size / 64)
    for _ in range(10_000):
        ang = rng.uniform(0, 2 * math.pi)
        n = rng.uniform(*length)
        t = np.round(h + n * np.array([math.cos(ang), math.sin(ang)]))
        if (t >= margin).all() and (t <= size - 1 - margin).all() and np.linalg.norm(t - h) >= min(4, length[0]):
            return (float(h[0]), float(h[1])), (float(t[0]), float(t[1]))
    raise ValueError(f"no drag of length {length} fits around handle {h.tolist()} in a {size}px image")


def generator_key(model: str | os.PathLike | None) -> str:
    """How a set names its generator: ``dcgan-faces``, or a file's or folder's absolute path."""
    if model is None or str(model) == "dcgan-faces":
        return "dcgan-faces"
    return str(Path(model).expanduser().resolve())


def make_gan_set(
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    seeds: Sequence[int] = range(20),
    handles: str = "random",
    length: tuple[float, float] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """Write one drag per seed on the generator's image for it into ``out`` (resuming: a sample already written is
    kept); returns the sample folders. ``length``: the drag lengths in px (default 6-20 % of the side)."""
    from ..pipelines.gan import DragGANPipeline
    from .metrics import AlexFeatures

    if handles not in HANDLES:
        raise InputError(f"handles {handles!r}: choose {' or '.join(HANDLES)}")
    pipe = DragGANPipeline.from_pretrained(model or "dcgan-faces")
    size = pipe.resolution
    lo, hi = length or (0.06 * size, 0.2 * size)
    if not 0 < lo <= hi < size:
        raise InputError(f"drag length {lo:g}-{hi:g} px: must be positive, increasing and under the side ({size} px)")
    features = AlexFeatures()
    key = generator_key(model)
    root = Path(out) / "samples" / handles
    folders = []
    for seed in tqdm(list(seeds), desc="gan set", unit="image", disable=None if progress else True):
        folder = root / f"seed{seed:04d}"
        folders.append(folder)
        if (folder / "sample.json").is_file() and (folder / "source.png").is_file():
            continue
        image = pipe.generate(seed).image
        h, t = random_drag(seed, features(image), size, (lo, hi), handles)
        folder.mkdir(parents=True, exist_ok=True)
        write_png(folder / "source.png", image)
        record: dict[str, Any] = {
            "id": f"{handles}/seed{seed:04d}",
            "category": handles,
            "handles": [list(h)],
            "targets": [list(t)],
            "prompt": "",
            "generated": {"generator": key, "seed": seed},
        }
        write_json(folder / "sample.json", record)  # last: a sample is whole once its record is there
    echo(f"gan set: {len(folders)} drags ({handles} handles, {lo:g}-{hi:g} px) on {key} in {out}")
    return folders
