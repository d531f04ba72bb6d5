"""AdaptiveDrag's automatic mask: superpixels in a feature space, and the editable region they give each handle.

AdaptiveDrag (Chen et al. 2024, §3.2) builds its mask-free editing on superpixels computed in the feature space
of SAM-2, because SLIC on RGB is "chaotic" while feature-space SLIC follows objects. No SAM weights exist here,
so the default feature space is the generator's own (the features the drag is supervised on, which already
separate parts: ``docs/faces64.md``); a user with SAM weights selects SAM's image embeddings instead
(``auto_mask_features=sam``, ``sam_model=ID_OR_FOLDER``, through transformers' ``SamModel``). Anything giving a
``(C, h, w)`` map plugs in. Pure functions on arrays, and one loader.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import ModelError
from ..core.params import Param, register
from ..utils.hub import first_line, looks_like_missing_folder, quiet_transformers

register(
    Param("auto_mask_segments", int, 200, "automatic mask: SLIC superpixels requested (n_segments)", "mask", min=2),
    Param(
        "auto_mask_compactness",
        float,
        10.0,
        "automatic mask: SLIC compactness (higher = squarer superpixels, lower = closer to feature edges)",
        "mask",
        min=0,
        min_exclusive=True,
    ),
    Param(
        "auto_mask_dilate",
        int,
        1,
        "automatic mask: grow the editable region by this many supervision-grid pixels",
        "mask",
        min=0,
    ),
    Param(
        "auto_mask_features",
        str,
        "model",
        "automatic mask: the feature space of the superpixels: the model's own features, or SAM's image embeddings "
        "(needs sam_model's weights)",
        "mask",
        choices=("model", "sam"),
    ),
    Param(
        "sam_model",
        str,
        "facebook/sam-vit-base",
        "automatic mask with auto_mask_features=sam: a SAM checkpoint (hub id or local folder, transformers SamModel)",
        "mask",
    ),
)

PCA_COMPONENTS = 8
LAB_RANGE = 100.0  # SLIC's compactness is calibrated for CIELAB, whose lightness spans 0–100


def feature_superpixels(features: Tensor, n_segments: int = 200, compactness: float = 10.0) -> np.ndarray:
    """SLIC superpixels (scikit-image) of a ``(C, h, w)`` or ``(1, C, h, w)`` feature map: an ``(h, w)`` integer
    label map.

    The features are reduced to their first 8 principal components (SLIC's cost grows with channels, and the
    leading components carry the part structure) and clipped to their 1st–99th percentiles. ``compactness`` keeps
    its CIELAB meaning (10 is SLIC's usual default there): scikit-image rescales a non-Lab image to [0, 1] before
    clustering, so the feature range stands for CIELAB's 100 units of lightness and SLIC gets
    ``compactness / 100``. A light Gaussian (σ = 1 px) smooths the features' pixel-level texture first.
    """
    from skimage.segmentation import slic

    f = features.detach().float().cpu()
    if f.dim() == 4:
        f = f[0]
    c, h, w = f.shape
    x = f.reshape(c, -1).T  # (h*w, C)
    x = x - x.mean(0)
    k = min(PCA_COMPONENTS, c, h * w)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = x @ v[:k].T  # (h*w, k)
    lo, hi = torch.quantile(proj, torch.tensor([0.01, 0.99]))
    img = proj.clamp(lo, hi).reshape(h, w, k).numpy().astype(np.float64)
    labels = slic(
        img,
        n_segments=n_segments,
        compactness=compactness / LAB_RANGE,
        sigma=1.0,
        channel_axis=-1,
        convert2lab=False,
        start_label=0,
    )
    return labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def load_sam(name: str) -> tuple[Any, Any]:
    """A SAM checkpoint (transformers ``SamModel`` and its image processor), loaded once per process; a missing
    or unreadable one is a :class:`ModelError` naming it."""
    from transformers import SamImageProcessor, SamModel

    if looks_like_missing_folder(name):
        raise ModelError(
            f"SAM model folder {name!r} does not exist; SAM is optional: point sam_model at a downloaded SAM "
            "folder, or use auto_mask_features=model"
        )
    try:
        with quiet_transformers():
            return SamModel.from_pretrained(name).eval(), SamImageProcessor.from_pretrained(name)
    except Exception as e:  # every loading failure is one line naming the model
        raise ModelError(
            f"cannot load SAM model {name!r} for the automatic mask: {first_line(e)}. SAM is optional: download it "
            "once with a network, point sam_model at a local folder, or use auto_mask_features=model"
        ) from None


def sam_features(image: Any, name: str, device: torch.device | str = "cpu") -> Tensor:
    """SAM's image embeddings of a PIL image as a ``(C, h, w)`` float map covering the image only (SAM pads its
    input square at the bottom and right; the embedding cells of the padding are cut off)."""
    model, processor = load_sam(name)
    model.to(device)
    x = processor(images=image.convert("RGB"), return_tensors="pt")
    px = x["pixel_values"]
    with torch.no_grad():
        emb = model.get_image_embeddings(px.to(device, model.dtype))[0].float().cpu()
    (rh, rw), (ph, pw) = x["reshaped_input_sizes"][0].tolist(), px.shape[-2:]
    eh, ew = emb.shape[-2:]
    return emb[:, : max(1, round(eh * rh / ph)), : max(1, round(ew * rw / pw))]


def label_at(labels: np.ndarray, point: Tensor) -> int:
    """The superpixel under a ``(row, col)`` point (rounded, clamped to the grid)."""
    h, w = labels.shape
    r, c = (round(float(v)) for v in point)
    return int(labels[min(max(r, 0), h - 1), min(max(c, 0), w - 1)])


def handle_region(labels: np.ndarray, handle: Tensor, target: Tensor) -> np.ndarray:
    """The editable region AdaptiveDrag gives one handle: its superpixel, cut to the half-plane facing the
    target, or the whole superpixel when the cut would keep at least half of it (the rule of AdaptiveDrag's
    code). ``handle``, ``target``: ``(row, col)`` on the label grid. Boolean ``(h, w)``."""
    h, w = labels.shape
    region = labels == label_at(labels, handle)
    d = (target - handle).double().numpy()
    rows, cols = np.mgrid[:h, :w]
    ahead = (rows - float(handle[0])) * d[0] + (cols - float(handle[1])) * d[1] >= 0
    cut = region & ahead
    return region if cut.sum() >= 0.5 * region.sum() else cut


def auto_mask(
    labels: np.ndarray, handles: Tensor, targets: Tensor, dilate: int = 1, path_radius: float = 1.5
) -> np.ndarray:
    """The union over handles of :func:`handle_region` and of the drag's own path (the segment from handle to
    target, ``path_radius`` wide, so the content may arrive where it is dragged — our addition: a target outside
    the handle's superpixel would otherwise be protected by the mask term), grown by ``dilate`` grid pixels.
    Boolean ``(h, w)``, True = may change."""
    from ..core.geometry import drag_region

    h, w = labels.shape
    out = np.zeros((h, w), bool)
    for p, t in zip(handles, targets, strict=True):
        out |= handle_region(labels, p, t)
        # drag_region works in (x, y); the grid is (row, col)
        out |= drag_region((h, w), [((float(p[1]), float(p[0])), (float(t[1]), float(t[0])))], path_radius)
    if dilate > 0:
        m = torch.from_numpy(out).float()[None, None]
        out = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)[0, 0].bool().numpy()
    return out


def automatic_mask(features: Tensor, handles: Tensor, targets: Tensor, params: Mapping[str, Any]) -> np.ndarray:
    """The automatic mask on the supervision grid from the initial features and a resolved parameter set."""
    labels = feature_superpixels(features, params["auto_mask_segments"], params["auto_mask_compactness"])
    return auto_mask(labels, handles, targets, params["auto_mask_dilate"])


def superpixel_spacing(labels: np.ndarray, label: int) -> float:
    """Distance from superpixel ``label``'s centroid to the nearest other superpixel's centroid (grid pixels):
    AdaptiveDrag's ``r``, from which its supervision and tracking radii follow."""
    rows, cols = np.mgrid[: labels.shape[0], : labels.shape[1]]
    flat = labels.ravel()
    n = int(flat.max()) + 1
    count = np.bincount(flat, minlength=n)
    present = count > 0
    cy = np.bincount(flat, rows.ravel(), minlength=n)[present] / count[present]
    cx = np.bincount(flat, cols.ravel(), minlength=n)[present] / count[present]
    ids = np.flatnonzero(present)
    k = int(np.searchsorted(ids, label))
    d = np.hypot(cy - cy[k], cx - cx[k])
    d[k] = np.inf
    return float(d.min()) if len(d) > 1 else float(max(labels.shape))


def semantic_offsets(
    labels: np.ndarray, handle: Tensor, target: Tensor, radius: int, shape: str = "disc", min_points: int = 3
) -> Tensor:
    """AdaptiveDrag's semantic patch: the offsets of a ``radius`` patch around the handle that fall in the
    handle's superpixel and in the half-plane facing the target; a disc of radius ``max(radius, 1)`` when fewer
    than ``min_points`` remain (a tiny or sliver region). ``(K, 2)`` float64 ``(row, col)`` offsets."""
    from ..core.geometry import inside, patch_offsets

    h, w = labels.shape
    base = patch_offsets(radius, shape)  # type: ignore[arg-type]
    p = handle.round()
    pos = p + base
    ok = inside(pos, (h, w))
    r, c = pos[ok].long().unbind(-1)
    keep = torch.zeros(len(base), dtype=torch.bool)
    keep[ok] = torch.from_numpy(labels[r.numpy(), c.numpy()] == label_at(labels, p))
    keep &= (base * (target - handle)).sum(-1) >= 0
    if int(keep.sum()) < min_points:
        return patch_offsets(max(radius, 1), "disc")
    return base[keep]


def semantic_geometry(ctx: Any, n_segments: int, compactness: float, shape: str) -> list[dict[str, Any]]:
    """Per handle, from the superpixels of the initial features (computed once per edit, kept in ``ctx.state``):
    the spacing ``r``, AdaptiveDrag's radii ``r_m = ⌊r/7⌋`` and ``r_p = ⌊2r/5⌋``, and the semantic motion and
    tracking offsets (:func:`semantic_offsets`; the tracking window is square, at least 1)."""
    key = f"semantic.{n_segments}.{compactness}.{shape}"
    if key not in ctx.state:
        labels = feature_superpixels(ctx.features0, n_segments, compactness)
        geo = []
        for p, t in zip(ctx.handles0, ctx.targets, strict=True):
            r = superpixel_spacing(labels, label_at(labels, p))
            r_m, r_p = int(r // 7), int(2 * r // 5)
            geo.append(
                {
                    "r": r,
                    "r_m": r_m,
                    "r_p": r_p,
                    "motion": semantic_offsets(labels, p, t, r_m, shape),
                    "track": semantic_offsets(labels, p, t, max(r_p, 1), "square"),
                }
            )
        ctx.state[key] = geo
    return ctx.state[key]
