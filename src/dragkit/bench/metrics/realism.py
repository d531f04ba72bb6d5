"""Realism inside the edited region: how far each local patch of an edit is from the nearest real patch.

MD says how far content moved and LPIPS outside the mask what changed there; neither sees whether the edited region
still looks like a real image (a warp that tears or streaks content moves it exactly where the matcher looks). This
measure looks at every cell of the editable region and asks how far the edit's patch there is from the nearest
patch of a **real** image that could explain it:

- **the source itself**, anywhere the drags could have brought content from (within the longest drag plus
  ``margin`` px of the cell): content that moved is real content, so a clean move scores as the source does. The
  source is also taken at the other half-cell phases (AlexNet's strides make a cell's features depend on where content
  falls in it: a clean 2-px shift scored 0.03 without them, 0.014 with) and softened by Gaussian blurs of 0.6 and 1.2
  px (for a 64-px image; scaled with it), as a model that redraws content a little softer does (a 1-px blur scored
  0.08, like damage, without them; 0.012 with);
- and, when a ``reference`` set is given, **real images of the same kind at about the same place** (within
  ``reference_window`` px): content the source did not have but such images do (an eye that opens, skin the model
  drew where something left).

Patches are compared as LPIPS compares them (Zhang et al., CVPR 2018): the LPIPS-AlexNet activations of conv2 and
conv3 (``layers=(1, 2)``), unit-normalised over channels and weighted by LPIPS's learned heads, resampled to the
conv2 grid (2 px of a 64-px image at the default input size of 256); the distance of two cells is LPIPS's
per-location term, ``Σ_l Σ_c w_lc (f̂_l − ĝ_l)²``. Nearest-neighbour distances to real patches as a realism score
follow Kynkäänniemi et al. (NeurIPS 2019) in image space, made local and spatial as the bidirectional similarity of
Simakov et al. (CVPR 2008) is: every patch of the output should come from a real one.

Per edit: the ``quantile`` (0.95) of the cells' distances over the region, ``distance`` (0 for the untouched source,
lower is better), their mean, and ``torn`` when the distance exceeds ``threshold``. The threshold and the choice of
every setting come from controls (``scripts/realism_controls.py``, ``docs/realism.md``): the source, a global
brightness change of 6%, a global shift of 2 px and a diffusion model's re-rendering of the face score under it; a
hard block shift (a tear), a smear along the drag and a pasted duplicate of the handle's feature score above it.
The network judging is LPIPS's AlexNet, never the editing model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import Tensor

from ...core.types import Point
from .lpips import LPIPS, _unit, image_tensor

# p95 of the cells' distances above which an edit is flagged as torn: above every benign control's on 40 faces
# and 40 DragBench photos (docs/realism.md).
TORN_THRESHOLD = 0.045
# Face seeds of the reference set: far from every seed the evaluations draw (0-59 training, 1000-1199 held out).
REFERENCE_FIRST_SEED = 100_000


@dataclass
class RealismScore:
    """One edit's realism inside its region: ``distance`` (the ``quantile`` of the cells' distances to the nearest
    real patch; 0 = every patch is a real one, lower is better), ``mean`` (their mean), ``torn`` (``distance`` over
    the threshold), ``cells`` (how many grid cells the region covers) and ``map`` (the distances on the feature
    grid, ``nan`` outside the region)."""

    distance: float
    mean: float
    torn: bool
    cells: int
    map: np.ndarray = field(repr=False)


class PatchFeatures:
    """LPIPS-AlexNet patch features of an image: the ``layers``' activations unit-normalised over channels, scaled
    by the square root of LPIPS's heads (so that a squared Euclidean distance is LPIPS's per-location term) and
    resampled to the first layer's grid. The image is resized so that its longer side is ``input_size``."""

    def __init__(self, layers: tuple[int, ...] = (1, 2), input_size: int = 256, model: LPIPS | None = None):
        if not layers:
            raise ValueError("PatchFeatures needs at least one LPIPS layer")
        self.layers, self.input_size = tuple(layers), input_size
        self.model = model or LPIPS.pretrained()

    def size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The input size an image of ``hw`` = ``(H, W)`` is resized to."""
        h, w = hw
        s = self.input_size / max(h, w)
        return max(32, round(h * s)), max(32, round(w * s))

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> Tensor:
        """``(B, C, gh, gw)`` for images of one size."""
        x = torch.cat([image_tensor(im) for im in images])
        x = F.interpolate(x, size=self.size(tuple(x.shape[-2:])), mode="bilinear", align_corners=False)
        acts = self.model.layers(x)
        grid = tuple(acts[self.layers[0]].shape[-2:])
        out = []
        for i in self.layers:
            f = _unit(acts[i]) * self.model.lins[i].weight.view(1, -1, 1, 1).sqrt()
            out.append(f if tuple(f.shape[-2:]) == grid else F.interpolate(f, size=grid, mode="bilinear"))
        return torch.cat(out, 1)


def nearest_distances(query: Tensor, bank: Tensor, cells: Tensor, window: int, chunk: int = 32) -> Tensor:
    """For each ``cells`` ``(M, 2)`` ``(row, col)`` of ``query`` ``(C, gh, gw)``: the smallest squared distance to a
    cell of any ``bank`` image ``(N, C, gh, gw)`` within ``window`` cells (Euclidean) of the same place. One matrix
    product per chunk of the bank over the region's bounding box."""
    c, gh, gw = query.shape
    q = query[:, cells[:, 0], cells[:, 1]].T.contiguous()  # (M, C)
    qn = q.pow(2).sum(1)
    r0, r1 = int(cells[:, 0].min()) - window, int(cells[:, 0].max()) + window
    c0, c1 = int(cells[:, 1].min()) - window, int(cells[:, 1].max()) + window
    rr, cc = torch.meshgrid(
        torch.arange(max(0, r0), min(gh, r1 + 1)), torch.arange(max(0, c0), min(gw, c1 + 1)), indexing="ij"
    )
    rr, cc = rr.reshape(-1), cc.reshape(-1)
    far = (cells[:, :1] - rr[None]) ** 2 + (cells[:, 1:] - cc[None]) ** 2 > window**2  # (M, S)
    flat = bank.reshape(bank.shape[0], c, -1)[:, :, rr * gw + cc]  # (N, C, S)
    best = torch.full((len(cells),), math.inf)
    for j in range(0, flat.shape[0], chunk):
        b = flat[j : j + chunk]
        d = qn[:, None, None] + b.pow(2).sum(1)[None] - 2 * torch.einsum("mc,ncs->mns", q, b)
        best = torch.minimum(best, d.masked_fill(far[:, None, :], math.inf).amin((1, 2)))
    return best.clamp_min(0)


class PatchRealism:
    """The realism measure (see the module's docstring). ``reference``: real images of the kind being edited, each
    of the source's size (for the face models: :func:`reference_faces`); ``None`` judges by the source alone, as
    for photos (``use_source=False``: by the reference alone, a population prior that the controls rejected). Call
    it with the source, the edit, the region (``(H, W)`` bool, True = editable) and the drags."""

    def __init__(
        self,
        reference: Sequence[Image.Image] | None = None,
        *,
        reference_window: float = 4.0,
        margin: float = 4.0,
        quantile: float = 0.95,
        threshold: float = TORN_THRESHOLD,
        features: PatchFeatures | None = None,
        use_source: bool = True,
        source_blurs: tuple[float, ...] = (0.6, 1.2),
    ) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile={quantile}: choose a fraction in (0, 1]")
        if not (use_source or reference):
            raise ValueError("without the source, realism needs reference images")
        self.use_source, self.source_blurs = use_source, tuple(source_blurs)
        self.features = features or PatchFeatures()
        self.reference_window, self.margin, self.quantile, self.threshold = (
            reference_window,
            margin,
            quantile,
            threshold,
        )
        self.reference_size = None if not reference else reference[0].size
        self.bank = None
        if reference:
            if any(im.size != self.reference_size for im in reference):
                raise ValueError("the reference images must all have one size")
            self.bank = torch.cat([self.features(reference[i : i + 64]) for i in range(0, len(reference), 64)])
        refs = f"{len(reference)} reference images within {reference_window:g} px" if reference else ""
        refs = " and ".join(x for x in ("the source" if use_source else "", refs) if x)
        self.name = f"patch-realism[lpips-alex{list(self.features.layers)}, {refs}, q{quantile:g}]"

    def __call__(
        self,
        source: Image.Image,
        edited: Image.Image,
        region: np.ndarray,
        handles: Sequence[Point],
        targets: Sequence[Point],
    ) -> RealismScore:
        if edited.size != source.size:
            edited = edited.resize(source.size, Image.BILINEAR)
        w, h = source.size
        region = np.asarray(region, bool)
        if region.shape != (h, w):
            raise ValueError(f"region is {region.shape} but the images are {(h, w)}")
        if not region.any():
            raise ValueError("the region selects no pixel")
        if self.bank is not None and source.size != self.reference_size:
            raise ValueError(f"the source is {source.size} but the reference images are {self.reference_size}")
        fe, fs = self.features([edited, source])
        gh, gw = fe.shape[-2:]
        cell = max(h / gh, w / gw)  # image pixels per grid cell
        # the source also at the other half-cell phases: AlexNet's strides make a cell's features depend on where
        # content falls within it, so content moved by half a cell would otherwise look new (a 2-px shift scored 0.03)
        k = round(cell / 2)
        phases = [(0, 0), (k, 0), (0, k), (k, k)] if k >= 1 else [(0, 0)]
        versions = [translated(source, dx, dy) for dx, dy in phases[1:]]
        scale = max(w, h) / 64  # blurs are given for a 64-px image
        for sigma in self.source_blurs:  # the source as a model that redraws it a little softer would
            soft = source.filter(ImageFilter.GaussianBlur(sigma * scale))
            versions += [translated(soft, dx, dy) for dx, dy in phases]
        sources = torch.cat([fs[None], self.features(versions)]) if versions else fs[None]
        on_grid = F.adaptive_max_pool2d(torch.from_numpy(region).float()[None, None], (gh, gw))[0, 0] > 0
        cells = torch.nonzero(on_grid)
        reach = max((math.dist(a, b) for a, b in zip(handles, targets, strict=True)), default=0.0)
        d = torch.full((len(cells),), math.inf)
        if self.use_source:
            d = nearest_distances(fe, sources, cells, math.ceil((reach + self.margin) / cell))
        if self.bank is not None:
            d = torch.minimum(d, nearest_distances(fe, self.bank, cells, math.ceil(self.reference_window / cell)))
        full = np.full((gh, gw), np.nan, np.float32)
        full[cells[:, 0].numpy(), cells[:, 1].numpy()] = d.numpy()
        distance = float(torch.quantile(d, self.quantile))
        return RealismScore(distance, float(d.mean()), distance > self.threshold, len(cells), full)


def translated(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """``image`` with its content moved ``(dx, dy)`` whole pixels, the edge replicated."""
    if dx == 0 and dy == 0:
        return image
    a = np.asarray(image.convert("RGB"))
    h, w = a.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return Image.fromarray(a[rows][:, cols])


@lru_cache(maxsize=2)
def reference_faces(n: int = 200, first_seed: int = REFERENCE_FIRST_SEED) -> tuple[Image.Image, ...]:
    """``n`` faces of the bundled DCGAN (seeds ``first_seed`` on): the real images a face model's edits are compared
    with (faces64 was trained on this generator's faces)."""
    from ...engines.gan.engine import GANEngine, to_pil

    gan = GANEngine.from_pretrained()  # the engine, not a pipeline: a measure depends on no editing method
    with torch.no_grad():
        return tuple(to_pil(gan.synthesize(gan.sample_z(first_seed + i))) for i in range(n))


def if_s2t(
    source: Image.Image,
    edited: Image.Image,
    handles: Sequence[Point],
    targets: Sequence[Point],
    radius: float = 8.0,
    model: LPIPS | None = None,
) -> float:
    """DragFlow's IF_s2t as LPIPS (lower = the moved content still looks like itself): LPIPS-alex between the
    source's square patch of half-side ``radius`` around each handle and the edit's around its target (the source
    region moved by the drag), each patch resized to 64×64, averaged over the pairs. It needs no reference set, but
    it scores the unedited source badly (nothing moved) and a pasted copy well: a measure of movement as much as of
    realism (``docs/realism.md``)."""
    from .lpips import lpips_distance

    if edited.size != source.size:
        edited = edited.resize(source.size, Image.BILINEAR)
    r = round(radius)

    def crop(im: Image.Image, p: Point) -> Image.Image:
        x, y = round(p[0]), round(p[1])
        return im.crop((x - r, y - r, x + r + 1, y + r + 1)).resize((64, 64), Image.BILINEAR)

    model = model or LPIPS.pretrained()
    pairs = list(zip(handles, targets, strict=True))
    return sum(lpips_distance(crop(source, h), crop(edited, t), model=model) for h, t in pairs) / len(pairs)
