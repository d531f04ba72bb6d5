"""What every pipeline does the same way around the loop: points back to image pixels, no-op pairs."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..geometry import GridMap
from ..types import DragRequest, Point

logger = logging.getLogger("dragkit")


def noop_pairs(request: DragRequest) -> dict[str, Any]:
    """Warn about pairs whose handle sits on its target (allowed; nothing moves there) and report them."""
    noop = request.noop_pairs
    if not noop:
        return {}
    logger.warning("pairs %s have the handle on the target: nothing to move there", [i + 1 for i in noop])
    return {"noop_pairs": [i + 1 for i in noop]}


def image_trajectory(records: list[dict[str, Any]], gm: GridMap, targets: list[Point]) -> list[dict[str, Any]]:
    """The loop's per-step records with handles and distances in image pixels (rounded for the JSON)."""
    t = torch.tensor(targets, dtype=torch.float64)
    out = []
    for rec in records:
        rec = dict(rec)
        xy = gm.to_image(torch.tensor(rec["handles"]))
        rec["handles"] = [[round(v, 3) for v in p] for p in xy.tolist()]
        rec["distances"] = [round(v, 3) for v in (t - xy).norm(dim=-1).tolist()]
        rec["losses"] = {k: round(v, 6) for k, v in rec["losses"].items()}
        out.append(rec)
    return out


def image_points(rc: torch.Tensor, gm: GridMap) -> list[Point]:
    return [(round(x, 3), round(y, 3)) for x, y in gm.to_image(rc).tolist()]
