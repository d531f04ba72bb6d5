"""Mean distance (MD), DragBench's movement measure (Shi et al., CVPR 2024; EVALUATION.md), any features.

For each handle: the source image's feature at the handle; the cosine-similarity argmax over the **whole**
edited feature map (no window, no mask); the Euclidean pixel distance from that match to the target. MD is the
mean over all pairs. The edited image is resized (bilinear) to the source size first. The official protocol uses
DIFT features of SD 2.1; any :class:`FeatureExtractor` plugs in (the real LPIPS-AlexNet one ships here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ...core.types import Point


class FeatureExtractor(Protocol):
    """image (+ its prompt, for text-conditioned extractors like DIFT) → ``(C, H, W)`` at the image's size."""

    name: str

    def __call__(self, image: Image.Image, prompt: str = "") -> Tensor: ...


@dataclass
class MDResult:
    distances: list[float]  # one per pair, pixels
    matches: list[Point]  # where each handle's content was found in the edited image, (x, y)

    @property
    def mean(self) -> float:
        return sum(self.distances) / len(self.distances)


@torch.no_grad()
def match_points(src_feat: Tensor, dst_feat: Tensor, points: Sequence[Point]) -> list[Point]:
    """For each ``(x, y)`` point (rounded to a pixel), the ``(x, y)`` of the cosine argmax over ``dst_feat``."""
    c, _, w = dst_feat.shape
    dst = F.normalize(dst_feat.reshape(c, -1), dim=0)
    out = []
    for x, y in points:
        xi, yi = round(x), round(y)
        v = F.normalize(src_feat[:, yi, xi], dim=0)
        idx = int(torch.argmax(v @ dst))
        out.append((float(idx % w), float(idx // w)))
    return out


def mean_distance(
    source: Image.Image,
    edited: Image.Image,
    handles: Sequence[Point],
    targets: Sequence[Point],
    extractor: FeatureExtractor,
    prompt: str = "",
) -> MDResult:
    """DragBench MD for one image: per-pair distances (pixels of the source image) and the matches."""
    if len(handles) != len(targets) or not handles:
        raise ValueError("mean_distance needs one target per handle and at least one pair")
    if edited.size != source.size:
        edited = edited.resize(source.size, Image.BILINEAR)
    fs = extractor(source, prompt)
    fe = extractor(edited, prompt)
    matches = match_points(fs, fe, handles)
    d = [float(torch.tensor([mx - tx, my - ty]).norm()) for (mx, my), (tx, ty) in zip(matches, targets, strict=True)]
    return MDResult(distances=d, matches=matches)
