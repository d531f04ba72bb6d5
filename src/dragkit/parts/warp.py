"""FastDrag's one-step latent warp (Zhao et al., NeurIPS 2024): the latent warpage function, the relocation of the
editable region's cells, and bilateral nearest-neighbour interpolation (BNNI) of the places they left empty. No
optimization: the drag happens in one step on the inverted latent, and sampling then repairs it.

Read from the released code (``XuanjiaZ/FastDrag`` @ def3c4e, ``utils/continuous_drag.py``; the paper's own formulas
were not checked), on the latent grid in ``(row, col)``:

- **Stretch.** ``O`` is the centre of the editable region's bounding box and ``R`` its half-diagonal. For a cell ``C``
  of the region and handle ``A_k``, ``P_k`` is where the ray from ``A_k`` through ``C`` leaves that circle, and
  ``s_k(C) = 1 − |C − A_k| / |P_k − A_k|``: 1 at the handle, 0 on the circle, linear along the ray.
- **Several drags.** ``v(C) = Σ_k w_k · s_k(C) · (B_k − A_k)`` with ``w_k ∝ 1 / (|C − A_k| + 1e-4)``, normalized.
- **Relocation.** Every cell of the region is cleared; then, in row-major order, each moves to ``round(C + v(C))``
  (clamped to the grid); the first to reach a place keeps it. Places outside the region may be written.
- **BNNI.** Every cleared place nothing moved into is filled, in row-major order and in place (places filled
  earlier count as known), from the nearest known cell in each of the four axis directions, weighted by 1/distance.

dragkit adds a second way to move the content, ``warp_sample=backward`` (:func:`backward_places`): Inpaint4Drag's
backward mapping on the same warpage function. Every place the warp reaches samples the content bilinearly where it
came from, so a stretched region neither repeats nor skips cells. And it adds ``repair_region``, where a warp's
result may be regenerated (``repair_strength``, driver ``warp``).

And a second field, ``warp_field=slide`` (:func:`slide_warp`, dragkit's): FastDrag's stretch moves the handle by the
whole drag and everything else less, linearly to nothing at a circle around the region, so the content between the
handle and that circle is stretched over the drag's length: a moved eye drags a streak behind it. The slide moves
the editable region's content rigidly instead: every place deep inside the region takes the content the drag's
vector behind it (``u(p) = d``), the vector falling to zero across a band of ``warp_band`` px inside the region's
edge. Content comes in from behind the handle (from outside the region, where the source is untouched), what was
under the target is covered, and only the band is sheared. No place is left empty. A third,
``warp_field=move`` (:func:`move_warp`), cuts a disc of ``warp_radius`` around each handle, moves it rigidly to
its target and fills the place it left with what the moved disc covers (``dragkit-gan``'s since issue 32).

Two guards the released code lacks: a cell exactly at a handle moves with that handle (theirs computes 0/0 and
drops it), and a handle outside the circle cannot make a negative square root. Empty places are tracked explicitly
(theirs takes a cell whose first channel is exactly 0 as empty).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import ParameterError
from ..core.params import Param, register

WARP_FILLS = ("interpolation", "original", "zero")
WARP_SAMPLES = ("relocate", "backward")
WARP_FIELDS = ("stretch", "slide", "move")
WARP_REGIONS = ("any", "bilinear")

register(
    Param(
        "init",
        str,
        "inverted",
        "the latent the method starts from: inverted (diffusion: the inversion's; GAN: the generator's code) or warp "
        "(FastDrag's one-step warp of it: content moved along the drags inside the editable region, the emptied "
        "places interpolated; on a GAN the code must be spatial, latent_block of 1 or more)",
        "warp",
        choices=("inverted", "warp"),
        common=True,
    ),
    Param(
        "warp_fill",
        str,
        "interpolation",
        "latent warp: how places the region's content left are filled: interpolation (FastDrag's BNNI), original "
        "(their values before the warp) or zero",
        "warp",
        choices=WARP_FILLS,
    ),
    Param(
        "warp_sample",
        str,
        "relocate",
        "latent warp: how content reaches its new place: relocate (FastDrag's: each cell moves to its rounded place, "
        "the first to arrive keeps it, which tears a stretched region into blocks) or backward (each place the warp "
        "reaches takes the content bilinearly sampled where the warp came from, as Inpaint4Drag's backward mapping: "
        "no holes or blocks inside the warped region)",
        "warp",
        choices=WARP_SAMPLES,
    ),
    Param(
        "warp_field",
        str,
        "stretch",
        "latent warp: how far each place of the editable region moves: stretch (FastDrag's warpage function: the "
        "handle by the whole drag, the rest less, linearly to nothing at a circle around the region; stretches what "
        "lies behind the handle into a streak) or slide (the region's content moved rigidly by the drag, content "
        "from behind the handle coming in, the motion falling to nothing across warp_band px inside the region's "
        "edge; with warp_sample=relocate the content is taken from the nearest cell) or move (a disc of warp_radius "
        "around each handle cut out and moved rigidly to its target, the place it left filled with the content the "
        "moved disc covers). slide and move lost to stretch on realism (docs/dragkit_recipe.md)",
        "warp",
        choices=WARP_FIELDS,
    ),
    Param(
        "warp_region",
        str,
        "any",
        "which latent cells the warp moves: any (a cell any painted pixel covers) or bilinear (FastDrag's code: the "
        "mask's bilinear resize, without antialiasing, above 0)",
        "warp",
        choices=WARP_REGIONS,
    ),
    Param(
        "warp_radius",
        float,
        0.1,
        "warp_field=move: the radius of the disc moved around each handle, as a fraction of the image's longer side",
        "warp",
        min=0.005,
        max=1,
    ),
    Param(
        "warp_band",
        float,
        3.0,
        "warp_field=slide or move: image pixels over which the motion falls to nothing, inside the editable region's "
        "edge (slide) or around each moved disc (move); 0: a hard cut",
        "warp",
        min=0,
        max=1000,
    ),
)


def latent_region(mask: Tensor, size: tuple[int, int], rule: str = "any") -> Tensor:
    """A supervision-grid mask ``(h, w)`` (1 = may change) at the latent's ``size``: with ``rule="any"`` a cell belongs
    to the region when any of the mask's pixels it covers does; with ``"bilinear"`` when the mask's bilinear resize
    (no antialiasing: it reads the 2×2 pixels at each cell's centre) is above 0, as FastDrag's code computes it."""
    if rule not in WARP_REGIONS:
        raise ValueError(f"warp_region={rule!r}: choose one of {', '.join(WARP_REGIONS)}")
    m = (mask.float() > 0)[None, None].float()
    if rule == "bilinear":
        return F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=False)[0, 0] > 0
    if m.shape[-2] >= size[0] and m.shape[-1] >= size[1]:
        m = F.adaptive_max_pool2d(m, size)
    else:
        m = F.interpolate(m, size=size, mode="nearest")
    return m[0, 0] > 0


def displacement(cells: Tensor, handles: Tensor, targets: Tensor, region: Tensor) -> Tensor:
    """FastDrag's latent warpage function: the displacement ``v(C)`` ``(K, 2)`` of each region cell ``(K, 2)`` for
    handles and targets ``(N, 2)`` on the latent grid (float ``(row, col)``)."""
    rows, cols = torch.nonzero(region, as_tuple=True)
    lo = torch.stack([rows.min(), cols.min()]).double()
    hi = torch.stack([rows.max(), cols.max()]).double()
    centre, radius = (lo + hi) / 2, float((hi - lo).norm()) / 2
    c = cells.double()[:, None, :]  # (K, 1, 2)
    a, drag = handles.double()[None], (targets - handles).double()[None]  # (1, N, 2)
    ca = c - a
    dist = ca.norm(dim=-1)  # |C − A_k|, (K, N)
    ao = a - centre
    l0 = (ca * ao).sum(-1) / dist.clamp_min(1e-12)
    reach = ((radius**2 - (ao * ao).sum(-1) + l0**2).clamp_min(0)).sqrt() - l0  # |P_k − A_k|
    stretch = torch.where(dist > 0, 1 - dist / reach.clamp_min(1e-12), torch.ones_like(dist)).clamp(0, 1)
    w = 1 / (dist + 1e-4)
    w = w / w.sum(-1, keepdim=True)
    return ((w * stretch)[..., None] * drag).sum(1)


def bnni(z: Tensor, empty: Tensor) -> Tensor:
    """Bilateral nearest-neighbour interpolation, in place and row-major: each empty cell of ``z`` ``(1, C, h, w)``
    takes the 1/distance-weighted mean of the nearest known cell left, right, above and below it. Returns ``z``."""
    empty = empty.clone()
    h, w = empty.shape
    for r, c in torch.nonzero(empty).tolist():
        total, weight = torch.zeros_like(z[0, :, 0, 0]), 0.0
        for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0)):
            rr, cc, k = r + dr, c + dc, 1
            while 0 <= rr < h and 0 <= cc < w and bool(empty[rr, cc]):
                rr, cc, k = rr + dr, cc + dc, k + 1
            if 0 <= rr < h and 0 <= cc < w:
                total += z[0, :, rr, cc] / k
                weight += 1 / k
        if weight > 0:  # (a cell with no known cell in any direction keeps its value)
            z[0, :, r, c] = total / weight
            empty[r, c] = False
    return z


def latent_warp(
    z: Tensor,
    handles: Tensor,
    targets: Tensor,
    region: Tensor,
    fill: str = "interpolation",
    sample: str = "relocate",
) -> Tensor:
    """FastDrag's one-step warp of a latent ``(1, C, h, w)``: the cells of ``region`` (``(h, w)`` bool) move by the
    latent warpage function of the drags (``handles``/``targets`` ``(N, 2)`` float ``(row, col)`` on the latent's
    grid), each to its rounded place (``sample="relocate"``, FastDrag's) or, with ``sample="backward"``, each place
    the warp reaches sampling the content bilinearly where it came from (:func:`backward_places`); the places left
    empty are filled by ``fill`` (``interpolation``: BNNI; ``original``: as they were; ``zero``). Returns a new
    latent."""
    if fill not in WARP_FILLS:
        raise ValueError(f"warp_fill={fill!r}: choose one of {', '.join(WARP_FILLS)}")
    if sample not in WARP_SAMPLES:
        raise ValueError(f"warp_sample={sample!r}: choose one of {', '.join(WARP_SAMPLES)}")
    if z.ndim != 4 or z.shape[0] != 1:
        raise ValueError(f"latent must be (1, C, h, w), got {tuple(z.shape)}")
    h, w = z.shape[-2:]
    region = region.to(torch.bool).cpu()
    if not bool(region.any()):
        return z.clone()
    cells = torch.nonzero(region)  # row-major order
    move = displacement(cells.to(torch.float64), handles.cpu(), targets.cpu(), region)
    src = z.detach().cpu() if z.device.type != "cpu" else z
    if sample == "backward":
        places, came_from = backward_places(cells, move, handles.cpu(), targets.cpu(), region)
        written = torch.zeros(h, w, dtype=torch.bool)
        written[places[:, 0], places[:, 1]] = True
        result = src.clone()
        if fill == "zero":
            result[0, :, region] = 0
        result[0, :, places[:, 0], places[:, 1]] = bilinear(src, came_from)
        if fill == "interpolation":
            result = bnni(result, region & ~written)
        return z.clone().copy_(result.to(z.device))
    dest = torch.round(cells + move)
    dest[:, 0].clamp_(0, h - 1)
    dest[:, 1].clamp_(0, w - 1)
    dest = dest.long()
    out = z.clone()
    written = torch.zeros(h, w, dtype=torch.bool)
    moved = torch.zeros_like(src)
    for (r, c), (dr, dc) in zip(cells.tolist(), dest.tolist(), strict=True):
        if not written[dr, dc]:  # the first cell to reach a place keeps it
            written[dr, dc] = True
            moved[0, :, dr, dc] = src[0, :, r, c]
    empty = region & ~written
    result = src.clone()  # "original": the empty places keep their values
    if fill == "zero":
        result[0, :, region] = 0
    result[0, :, written] = moved[0, :, written]
    if fill == "interpolation":  # the empty places' old values are never read: BNNI skips them as unknown
        result = bnni(result, empty)
    return out.copy_(result.to(out.device))


def backward_places(
    cells: Tensor, move: Tensor, handles: Tensor, targets: Tensor, region: Tensor
) -> tuple[Tensor, Tensor]:
    """The backward mapping of the warp (as Inpaint4Drag's, on FastDrag's warpage function): each region cell ``C``
    lands at ``C + v(C)``; a place ``p`` near those landings gets the source position ``q = p − u(p)``, ``u`` the
    1/distance-weighted displacement of its four nearest landings, and keeps it only when ``q`` lies in the region
    and the warp of ``q`` lands within one cell of ``p`` (a place no landing explains stays empty). Returns the
    places ``(M, 2)`` long and their source positions ``(M, 2)`` float ``(row, col)``."""
    from scipy.spatial import cKDTree

    h, w = region.shape
    landed = (cells.double() + move).numpy()
    tree = cKDTree(landed)
    rr, cc = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    places = torch.stack([rr.reshape(-1), cc.reshape(-1)], 1)
    k = min(4, len(landed))
    dist, idx = tree.query(places.double().numpy(), k=k)
    dist, idx = torch.from_numpy(dist).reshape(len(places), k), torch.from_numpy(idx).reshape(len(places), k)
    near = dist[:, 0] <= 2.0
    places, dist, idx = places[near], dist[near], idx[near]
    weight = 1 / (dist + 1e-6)
    u = (weight[..., None] * move[idx]).sum(1) / weight.sum(1, keepdim=True)
    q = places.double() - u
    inside = (q[:, 0] >= 0) & (q[:, 0] <= h - 1) & (q[:, 1] >= 0) & (q[:, 1] <= w - 1)
    nearest = q.round().long()
    nearest[:, 0].clamp_(0, h - 1)
    nearest[:, 1].clamp_(0, w - 1)
    inside &= region[nearest[:, 0], nearest[:, 1]]
    lands = q + displacement(q, handles.double(), targets.double(), region)
    keep = inside & ((lands - places.double()).norm(dim=1) <= 1.0)
    return places[keep], q[keep]


def bilinear(z: Tensor, at: Tensor) -> Tensor:
    """``z`` ``(1, C, h, w)`` sampled bilinearly at float ``(row, col)`` positions ``at`` ``(M, 2)``: ``(C, M)``."""
    h, w = z.shape[-2:]
    grid = torch.stack([at[:, 1] / max(w - 1, 1), at[:, 0] / max(h - 1, 1)], -1) * 2 - 1
    out = F.grid_sample(z.double(), grid[None, None], mode="bilinear", align_corners=True)
    return out[0, :, 0].to(z.dtype)


def repair_region(
    mask: Tensor, targets: Tensor, grid: tuple[int, int], size: tuple[int, int], keep: float, band: int
) -> Tensor:
    """Where a warp's result is re-generated (``repair_strength``): the editable region at the latent's ``size``,
    grown by ``band`` cells (the seam along its edge), less discs of radius ``keep`` (supervision-grid px) around
    the ``targets`` ``(N, 2)`` on ``grid``, where the moved content now sits. Returns an ``(h, w)`` float 0/1 mask.
    Inpaint4Drag re-generates the vacated places and a band along the warped edge the same way."""
    region = latent_region(mask.cpu(), size)[None, None].float()
    if band > 0:
        region = F.max_pool2d(region, 2 * band + 1, stride=1, padding=band)
    (h, w), (lh, lw) = grid, size
    rows = (torch.arange(lh, dtype=torch.float64)[:, None] + 0.5) * h / lh - 0.5
    cols = (torch.arange(lw, dtype=torch.float64)[None, :] + 0.5) * w / lw - 0.5
    out = region[0, 0]
    for r, c in targets.cpu().double().tolist():
        out = out * (((rows - r) ** 2 + (cols - c) ** 2).sqrt() > keep).float()
    return out


def slide_field(handles: Tensor, targets: Tensor, region: Tensor, band: float) -> Tensor:
    """The slide's backward displacement ``u`` ``(h, w, 2)`` on the latent grid: each place ``p`` of ``region`` takes
    the content at ``p − u(p)``. ``u(p) = φ(p) Σ_k w_k(p) (B_k − A_k)``, ``w_k ∝ 1/(distance from p to the k-th
    handle→target segment + 1e-4)``, ``φ`` rising linearly from 0 at the region's edge to 1 at ``band`` cells inside
    it (a hard step when ``band`` is 0; the image's border is not an edge); 0 outside the region."""
    from scipy.ndimage import distance_transform_edt

    h, w = region.shape
    inside = region.numpy().astype(bool)
    depth = torch.from_numpy(distance_transform_edt(np.pad(inside, 1, constant_values=True))[1:-1, 1:-1])
    phi = ((depth - 0.5) / band).clamp(0, 1) if band > 0 else (depth > 0).double()
    phi = phi * torch.from_numpy(inside)
    p = _cell_grid(h, w)[:, :, None, :]  # (h, w, 1, 2)
    a, d = handles.double()[None, None], (targets - handles).double()[None, None]  # (1, 1, N, 2)
    t = (((p - a) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    dist = (p - a - t[..., None] * d).norm(dim=-1)  # (h, w, N): to each segment
    weight = 1 / (dist + 1e-4)
    weight = weight / weight.sum(-1, keepdim=True)
    return phi[..., None] * (weight[..., None] * d).sum(-2)


def slide_warp(z: Tensor, handles: Tensor, targets: Tensor, region: Tensor, band: float, sample: str) -> Tensor:
    """dragkit's slide of a latent ``(1, C, h, w)`` (:func:`slide_field`): every place takes the content at ``p −
    u(p)``, bilinearly (``sample="backward"``) or from the nearest cell (``relocate``), the image's edge replicated.
    Returns a new latent."""
    h, w = z.shape[-2:]
    u = slide_field(handles.cpu(), targets.cpu(), region.cpu(), band)
    out = _taken_from(z, _cell_grid(h, w) - u, sample)
    keep = region.to(z.device)[None, None]
    return z.clone().copy_(torch.where(keep, out.to(z.dtype), z))


def _cell_grid(h: int, w: int) -> Tensor:
    """Every cell's ``(row, col)``, ``(h, w, 2)`` float64."""
    rr, cc = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([rr, cc], -1)


def _taken_from(z: Tensor, q: Tensor, sample: str) -> Tensor:
    """``z`` ``(1, C, h, w)`` read at the places ``q`` ``(h, w, 2)`` (row, col): bilinearly (``backward``) or at the
    nearest cell (``relocate``), the edge replicated; float64."""
    h, w = z.shape[-2:]
    if sample == "relocate":
        q = q.round()
    grid = torch.stack([q[..., 1] / max(w - 1, 1), q[..., 0] / max(h - 1, 1)], -1) * 2 - 1
    src = z.detach().double()
    return F.grid_sample(src, grid[None].to(src.device), mode="bilinear", padding_mode="border", align_corners=True)


def slid_handles(handles: Tensor, targets: Tensor, region: Tensor, band: float) -> Tensor:
    """Where the slide puts each handle's content: the place ``p`` with ``p − u(p) = A_k``, found by fixed-point
    iteration from the target (``u`` bilinear between cells); a handle outside the region stays."""
    u = slide_field(handles.cpu(), targets.cpu(), region.cpu(), band).permute(2, 0, 1)[None]  # (1, 2, h, w)
    h, w = region.shape
    out = handles.double().clone()
    for k, (a, b) in enumerate(zip(handles.double(), targets.double(), strict=True)):
        r, c = a.round().long().tolist()
        if not (0 <= r < h and 0 <= c < w and bool(region[r, c])):
            continue
        p = b.clone()
        for _ in range(20):
            g = torch.stack([p[1] / max(w - 1, 1), p[0] / max(h - 1, 1)]) * 2 - 1
            at = F.grid_sample(u, g.view(1, 1, 1, 2), mode="bilinear", padding_mode="border", align_corners=True)
            p = a + at.view(2)
        out[k] = p
    return out


def move_warp(
    z: Tensor, handles: Tensor, targets: Tensor, region: Tensor, radius: float, band: float, sample: str
) -> Tensor:
    """dragkit's cut-and-move of a latent ``(1, C, h, w)``: the disc of ``radius`` cells around each handle is moved
    rigidly to its target, and the place it left takes the content the moved disc now covers (from ``p + k·d``, the
    first whole multiple of the drag past the handle's disc: a content-aware fill by the content that was pushed
    aside). Both discs blend into what surrounds them over ``band`` cells; only ``region`` changes. Later drags win
    where discs overlap."""
    h, w = z.shape[-2:]
    p = _cell_grid(h, w)
    u = torch.zeros(h, w, 2, dtype=torch.float64)
    alpha = torch.zeros(h, w, dtype=torch.float64)
    soft = max(band, 1e-6)
    for a, b in zip(handles.double(), targets.double(), strict=True):
        d = b - a
        if float(d.norm()) == 0:
            continue
        dist_a, dist_b = (p - a).norm(dim=-1), (p - b).norm(dim=-1)
        k = torch.ones(h, w, dtype=torch.float64)
        for _ in range(int(2 * radius / float(d.norm())) + 2):  # the first multiple of d that leaves the disc
            k = torch.where((p + k[..., None] * d - a).norm(dim=-1) <= radius, k + 1, k)
        fill = ((radius + soft / 2 - dist_a) / soft).clamp(0, 1)
        moved = ((radius + soft / 2 - dist_b) / soft).clamp(0, 1)
        u = torch.where((fill > 0)[..., None], -k[..., None] * d, u)
        alpha = torch.maximum(alpha * (fill <= 0), fill)
        u = torch.where((moved > 0)[..., None], d.expand(h, w, 2), u)
        alpha = torch.where(moved > 0, moved, alpha)
    alpha = alpha * region.double()
    out = _taken_from(z, p - u, sample)
    a_ = alpha.to(out.device)[None, None]
    return z.clone().copy_((a_ * out + (1 - a_) * z.detach().double()).to(z.dtype))


def warp_on_grid(
    z: Tensor,
    handles: Tensor,
    targets: Tensor,
    mask: Tensor | None,
    grid: tuple[int, int],
    fill: str = "interpolation",
    sample: str = "relocate",
    field: str = "stretch",
    band: float = 0.0,
    radius: float = 0.1,
    region_rule: str = "any",
) -> tuple[Tensor, Tensor, int]:
    """The warp as a drag's starting point on any engine: ``handles``/``targets`` ``(N, 2)`` and ``mask`` (1 = may
    change) on the supervision ``grid``, scaled to the latent's own grid (not rounded again, as FastDrag's code does);
    ``field``: FastDrag's ``stretch``, or dragkit's ``slide`` or ``move`` (``band`` in ``grid`` pixels, ``radius`` a
    fraction of the latent's longer side). Returns the warped
    latent, where the warp put each handle (on ``grid``: a handle inside the region moves as its cell does, one
    outside stays), and the number of region cells."""
    if mask is None:
        raise ParameterError("init=warp moves the editable region's content: paint a mask, or use mask=auto")
    if field not in WARP_FIELDS:
        raise ValueError(f"warp_field={field!r}: choose one of {', '.join(WARP_FIELDS)}")
    (h, w), (lh, lw) = grid, z.shape[-2:]
    scale = torch.tensor([lh / h, lw / w], dtype=torch.float64)
    region = latent_region(mask.cpu(), (lh, lw), region_rule)
    a, b = handles.cpu().double() * scale, targets.cpu().double() * scale
    if field == "move":
        cells_band = band * float(scale.mean())
        cells_radius = radius * max(lh, lw)
        out = move_warp(z, a, b, region, cells_radius, cells_band, sample)
        at = [i for i, (r, c) in enumerate(a.round().long().tolist()) if bool(region[min(r, lh - 1), min(c, lw - 1)])]
        moved = handles.clone()
        moved[at] = targets[at].to(moved.dtype)
        return out, moved, int(region.sum())
    if field == "slide":
        cells_band = band * float(scale.mean())
        out = slide_warp(z, a, b, region, cells_band, sample) if bool(region.any()) else z.clone()
        moved = (slid_handles(a, b, region, cells_band) / scale).to(handles.dtype).to(handles.device)
        return out, moved, int(region.sum())
    out = latent_warp(z, a, b, region, fill, sample)
    at = [i for i, (r, c) in enumerate(a.round().long().tolist()) if bool(region[min(r, lh - 1), min(c, lw - 1)])]
    moved = handles.clone()
    if at:
        moved[at] = ((a[at] + displacement(a[at], a, b, region)) / scale).to(moved.dtype).to(moved.device)
    return out, moved, int(region.sum())
