"""Point trackers: where did each handle's content go after a latent update?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.geometry import inside, sample, values_at, window
from ..core.loop import DragContext, Tracker, TrackResult
from ..core.params import Param, default, register
from . import automask  # noqa: F401 - registers the auto_mask_* parameters the semantic parts default to

register(
    Param("r_p", int, 3, "tracking search radius (supervision-grid pixels)", "tracker", min=0, common=True),
    Param(
        "track_learn_steps",
        int,
        30,
        "discriminative tracker: gradient steps that learn each handle's filter (once, before dragging)",
        "tracker",
        min=0,
    ),
    Param(
        "track_sigma",
        float,
        1.0,
        "discriminative tracker: σ of the Gaussian label centred on the handle (supervision-grid pixels)",
        "tracker",
        min=0,
        min_exclusive=True,
    ),
    Param("track_ridge", float, 0.1, "discriminative tracker: ridge penalty on the filter", "tracker", min=0),
    Param(
        "track_fusion",
        float,
        0.75,
        "discriminative tracker: weight of the filter's response against feature matching (1 = filter only)",
        "tracker",
        min=0,
        max=1,
    ),
    Param(
        "track_train_radius",
        int,
        6,
        "discriminative tracker: radius of the window around the handle the filter learns from",
        "tracker",
        min=1,
    ),
    Param(
        "backtrack",
        bool,
        False,
        "position-supervised backtracking around any tracker: reject a tracked point that moves away from the "
        "target or jumps too far, and keep the last accepted one",
        "tracker",
    ),
    Param(
        "track_every",
        int,
        1,
        "track the handles every this many optimizer steps instead of after each (GoodDrag's max_drag_per_track: 3)",
        "tracker",
        min=1,
        max=1000,
    ),
    Param(
        "fast_near_rule",
        str,
        "paper",
        "fast tracker, a handle within 1 px of its target: paper (it moves onto the target) or code (CLIPDrag's code: "
        "it stays unless the target's feature distance is under its squared pixel distance, 1)",
        "tracker",
        choices=("paper", "code"),
    ),
    Param(
        "track_lagged",
        bool,
        False,
        "periodic tracking reads the features of the forward before the last update, one update behind (GoodDrag's "
        "released code does; its paper does not say)",
        "tracker",
    ),
    Param(
        "stuck_rounds",
        int,
        0,
        "stop the drag when this many tracking rounds in a row leave every handle exactly where it was (GoodDrag's "
        "max_track_no_change: 10; 0 = never)",
        "schedule",
        min=0,
        max=10_000,
    ),
    Param(
        "backtrack_max_jump",
        float,
        3.0,
        "backtracking: the longest move per step a tracked point may make (supervision-grid pixels)",
        "tracker",
        min=0,
        min_exclusive=True,
    ),
)


@dataclass(frozen=True)
class NearestTracker:
    """Nearest-neighbour point tracking (DragGAN, Pan et al. 2023, eq. 2; DragDiffusion, Shi et al. 2024, eq. 4).

    ``p_i ← argmin_{q ∈ Ω2(p_i, r_p)} ‖F(q) − f_i‖₁`` with ``f_i = F₀(p_i⁰)`` the handle's feature on the initial
    latent (bilinearly sampled when ``p_i⁰`` is sub-pixel) and ``Ω2`` the ``(2r_p+1)²`` integer window around the
    rounded current handle, clipped to the grid. Ties go to the first minimum in row-major order. Gives no
    confidence.
    """

    r_p: int = default("r_p")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> NearestTracker:
        return cls(r_p=p["r_p"])

    def prepare(self, ctx: DragContext) -> None:
        ctx.state["nearest.templates"] = sample(ctx.features0, ctx.handles0)  # (N, C)

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        templates = ctx.state["nearest.templates"]
        h, w = features.shape[-2:]
        new = []
        for i in range(handles.shape[0]):
            new.append(nearest_candidate(features, window(handles[i], self.r_p, (h, w)), templates[i]))
        return TrackResult(handles=torch.stack(new))


@dataclass(frozen=True)
class FastTracker:
    """Fast point tracking (CLIPDrag, Jiang, Wang, Chen, ICLR 2025, §3.3): nearest-neighbour tracking restricted to
    the candidates of the ``(2r_p+1)²`` window that are **strictly closer to the target** than the current handle.

    ``p_i ← argmin_{q ∈ Ω2(p_i, r_p), ‖q − t_i‖ < ‖p_i − t_i‖} ‖F(q) − f_i‖₁``; when no candidate is closer (the
    handle is on its target, or the window is clipped away from it) the handle stays. So the distance to the target
    never grows, and every step moves the handle at least one grid pixel toward its target while one is closer:
    the tracker cannot report the content drifting back, it assumes the drag makes progress (the paper's point: it
    converges in fewer steps). Gives no confidence.
    """

    r_p: int = default("r_p")
    near: str = default("fast_near_rule")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> FastTracker:
        return cls(r_p=p["r_p"], near=p["fast_near_rule"])

    def prepare(self, ctx: DragContext) -> None:
        ctx.state["fast.templates"] = sample(ctx.features0, ctx.handles0)

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        templates = ctx.state["fast.templates"]
        h, w = features.shape[-2:]
        new = []
        for i in range(handles.shape[0]):
            cand = window(handles[i], self.r_p, (h, w))
            now = float((handles[i] - ctx.targets[i]).norm())
            closer = (cand - ctx.targets[i]).norm(dim=-1) < now - 1e-9
            if self.near == "code" and now**2 <= 1 + 1e-9 and closer.any():
                # CLIPDrag's code: the handle itself competes, its cost the squared pixel distance to the target
                cost = (values_at(features, cand[closer]) - templates[i]).abs().sum(-1)
                k = int(torch.argmin(cost))
                new.append(cand[closer][k] if float(cost[k]) < now**2 else handles[i])
                continue
            new.append(nearest_candidate(features, cand[closer], templates[i]) if closer.any() else handles[i])
        return TrackResult(handles=torch.stack(new))


def nearest_candidate(features: Tensor, cand: Tensor, template: Tensor) -> Tensor:
    """The candidate position whose feature is nearest the template in L1 (the first in order on ties)."""
    cost = (values_at(features, cand) - template).abs().sum(-1)
    return cand[int(torch.argmin(cost))]


@dataclass(frozen=True)
class DiscriminativeTracker:
    """Discriminative point tracking with a confidence (StableDrag, Cui et al., ECCV 2024, §3.2).

    Per handle, a tracking model ``z_i``: a 1×C (1×1 spatial) filter over channel-normalized features, initialized
    from the handle's template ``f_i = F₀(p_i⁰)`` and learned **once, before dragging**, on the first step's
    features (detached) in a ``(2R+1)²`` window around the handle, then frozen. The paper leaves the objective open;
    ours is the correlation-filter reading: ridge regression of the response onto a Gaussian label centred on the
    handle, ``min_z mean_q (x_q·z − y_q)² + λ‖z‖²``, solved by ``track_learn_steps`` gradient steps of size
    ``1/L`` (``L`` the objective's Lipschitz constant) from the template. Learning against the handle's own
    surroundings down-weights the channels it shares with them, which is what rejects look-alike distractors.

    Tracking: over the ``(2r_p+1)²`` window around the current handle, the filter's response ``r(q) = x_q·z``
    normalized by its response at the handle on the initial features (a perfect match is 1) is fused with
    feature-difference matching, ``s(q) = α·r(q)/r₀ + (1−α)·(1 − ‖F(q) − f_i‖₁ / d₀)`` with ``d₀`` the mean L1
    distance from the template over the training window; the new handle is the argmax. The handle's
    **confidence** is ``clamp(r(q*)/r₀, 0, 1)`` (the paper's peak response, normalized).

    Defaults, measured on long drags on the real DCGAN faces (``scripts/gan_drag_eval.py``, docs/stabledrag.md):
    learning the filter beats using the template as it is (``learn_steps=0``), 30 steps are as good as 100;
    σ = 1, ridge 0.1 and a training window of radius 6 were best of their one-at-a-time sweeps; fusion α = 0.75
    (mostly the filter, some feature matching) tracked the content best on both the tuning and held-out drags.
    """

    r_p: int = default("r_p")
    learn_steps: int = default("track_learn_steps")
    sigma: float = default("track_sigma")
    ridge: float = default("track_ridge")
    fusion: float = default("track_fusion")
    train_radius: int = default("track_train_radius")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> DiscriminativeTracker:
        return cls(
            r_p=p["r_p"],
            learn_steps=p["track_learn_steps"],
            sigma=p["track_sigma"],
            ridge=p["track_ridge"],
            fusion=p["track_fusion"],
            train_radius=p["track_train_radius"],
        )

    def learn(self, features0: Tensor, handle: Tensor) -> dict[str, Tensor]:
        """The frozen model of one handle: filter, template, and the two normalizers."""
        h, w = features0.shape[-2:]
        template = sample(features0, handle[None])[0].float()  # (C,)
        cand = window(handle.round(), self.train_radius, (h, w))
        raw = values_at(features0, cand).float()  # (K, C)
        x = F.normalize(raw, dim=-1)
        y = torch.exp(-((cand - handle).pow(2).sum(-1)) / (2 * self.sigma**2)).float()
        z = F.normalize(template, dim=-1).clone()
        # ∇ = 2/K·Xᵀ(Xz − y) + 2λz; Lipschitz constant 2(λ_max(XᵀX)/K + λ)
        lip = 2 * (torch.linalg.matrix_norm(x, ord=2) ** 2 / len(x) + self.ridge)
        for _ in range(self.learn_steps):
            grad = 2 / len(x) * x.T @ (x @ z - y) + 2 * self.ridge * z
            z = z - grad / lip
        r0 = float(F.normalize(template, dim=-1) @ z)
        if r0 <= 1e-8:  # the filter learned nothing positive at the handle: fall back to the template itself
            z, r0 = F.normalize(template, dim=-1), 1.0
        d0 = float((raw - template).abs().sum(-1).mean().clamp_min(1e-8))
        return {"filter": z, "template": template, "r0": torch.tensor(r0), "d0": torch.tensor(d0)}

    def prepare(self, ctx: DragContext) -> None:
        ctx.state["discriminative.models"] = [self.learn(ctx.features0, p) for p in ctx.handles0]

    def scores(self, features: Tensor, handle: Tensor, model: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Candidates around ``handle``, their fused scores and their normalized filter responses."""
        h, w = features.shape[-2:]
        cand = window(handle, self.r_p, (h, w))
        raw = values_at(features, cand).float()
        response = (F.normalize(raw, dim=-1) @ model["filter"]) / model["r0"]
        similarity = 1 - (raw - model["template"]).abs().sum(-1) / model["d0"]
        return cand, self.fusion * response + (1 - self.fusion) * similarity, response

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        new, conf = [], []
        for i, model in enumerate(ctx.state["discriminative.models"]):
            cand, score, response = self.scores(features, handles[i], model)
            k = int(torch.argmax(score))
            new.append(cand[k])
            conf.append(float(response[k].clamp(0, 1)))
        return TrackResult(handles=torch.stack(new), confidences=torch.tensor(conf, dtype=torch.float64))


@dataclass(frozen=True)
class BacktrackingTracker:
    """Position-supervised backtracking (AdaptiveDrag, Chen et al. 2024, §3.3, fig. 4) around any tracker.

    The paper constrains the tracked point by the drag's direction and distance but gives no rule (its released
    code has none). Ours: with ``p`` the handle's last accepted position, ``c`` the inner tracker's candidate and
    ``t`` the target, the candidate is **accepted** when

    1. it is no farther from the target, ``‖t − c‖ ≤ ‖t − p‖`` (a point never moves against the drag), and
    2. it moved at most ``max_jump`` grid pixels, ``‖c − p‖ ≤ max_jump`` (one optimizer step moves content about a
       pixel; a longer jump is a look-alike, not the content);

    otherwise the handle **steps back** to ``p`` (it stays where it was last trusted) and the next step searches
    around ``p`` again. Confidences of the inner tracker pass through. Each step's record lists which handles
    were held back (``backtracked``).
    """

    inner: Tracker
    max_jump: float = default("backtrack_max_jump")

    def prepare(self, ctx: DragContext) -> None:
        self.inner.prepare(ctx)

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        res = self.inner.track(features, handles, ctx)
        cand = res.handles.to(handles.dtype)
        closer = (ctx.targets - cand).norm(dim=-1) <= (ctx.targets - handles).norm(dim=-1) + 1e-9
        short = (cand - handles).norm(dim=-1) <= self.max_jump + 1e-9
        ok = closer & short
        new = torch.where(ok[:, None], cand, handles)
        return TrackResult(handles=new, confidences=res.confidences, notes={"backtracked": (~ok).tolist()})


@dataclass(frozen=True)
class PeriodicTracker:
    """Tracking every ``every`` optimizer steps instead of after each (GoodDrag, Zhang et al., ICLR 2025: several
    drags per tracking, ``max_drag_per_track``), around any tracker. On the other steps the handles stay where they
    were. It also counts the tracking rounds in a row that leave every handle exactly where it was
    (``ctx.state["track.unchanged"]``, kept across the phases of an edit that share a state), which a schedule's
    ``stuck`` rule reads (GoodDrag's ``max_track_no_change``). Only rounds after updates count: the tracking on a
    phase's entry (step 0, after a denoising step) neither counts nor resets, as in GoodDrag's code."""

    inner: Tracker
    every: int = default("track_every")
    lagged: bool = default("track_lagged")

    def prepare(self, ctx: DragContext) -> None:
        self.inner.prepare(ctx)

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        previous = ctx.state.get("periodic.previous")  # the features of the step before (``lagged``)
        if self.lagged:
            ctx.state["periodic.previous"] = features
        if ctx.step % self.every:
            return TrackResult(handles=handles, confidences=ctx.confidences)
        if self.lagged and ctx.step > 0 and previous is not None:
            features = previous
        res = self.inner.track(features, handles, ctx)
        if ctx.step > 0:
            same = torch.equal(res.handles.to(handles.dtype), handles)
            ctx.state["track.unchanged"] = ctx.state.get("track.unchanged", 0) + 1 if same else 0
        return res


@dataclass(frozen=True)
class SemanticRegionTracker:
    """Semantic-driven point tracking (AdaptiveDrag, Chen et al. 2024, §3.3): nearest-neighbour matching of the
    handle's initial feature over a search window shaped by its superpixel.

    With ``r`` as in :class:`~dragkit.parts.SemanticRegionSupervision`, the window is the ``⌊2r/5⌋`` square (at
    least 1) around the current handle, kept to the offsets inside the handle's superpixel and in the half-plane
    facing the target (fixed at the start, travelling with the handle); a disc when fewer than 3 remain.
    Candidates outside the grid are left out.
    """

    n_segments: int = default("auto_mask_segments")
    compactness: float = default("auto_mask_compactness")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> SemanticRegionTracker:
        return cls(n_segments=p["auto_mask_segments"], compactness=p["auto_mask_compactness"])

    def prepare(self, ctx: DragContext) -> None:
        from .automask import semantic_geometry

        ctx.state["semantic.templates"] = sample(ctx.features0, ctx.handles0)
        ctx.state["semantic.tracking"] = [
            g["track"] for g in semantic_geometry(ctx, self.n_segments, self.compactness, "square")
        ]

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        h, w = features.shape[-2:]
        new = []
        for i, off in enumerate(ctx.state["semantic.tracking"]):
            cand = handles[i].round() + torch.cat([off.new_zeros(1, 2), off])  # the handle itself always competes
            cand = cand[inside(cand, (h, w))]
            if len(cand) == 0:
                new.append(handles[i])
                continue
            new.append(nearest_candidate(features, cand, ctx.state["semantic.templates"][i]))
        return TrackResult(handles=torch.stack(new))


@dataclass(frozen=True)
class DragGANCodeTracker:
    """Point tracking as DragGAN's released code does it (``viz/renderer.py`` at 336f120), where it differs from
    :class:`NearestTracker` (the papers' equation): the template is the initial feature read exactly at the rounded
    handle, the distance is **L2** over channels (the paper writes L1), the window is the ``(2r_p+1)²`` square around
    the handle clipped to the grid, and the first minimum in row-major order wins. Used by ``draggan`` on StyleGAN
    generators, so that dragkit tracks the points DragGAN's own code tracks (tests/oracle/draggan). No confidence.
    """

    r_p: int = default("r_p")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> DragGANCodeTracker:
        return cls(r_p=p["r_p"])

    def prepare(self, ctx: DragContext) -> None:
        f0 = ctx.features0
        ctx.state["draggan.templates"] = [
            f0[:, :, round(float(r)), round(float(c))] for r, c in ctx.handles0.tolist()
        ]  # (1, C) each

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        h, w = features.shape[-2:]
        new = []
        for (row, col), ref in zip(handles.tolist(), ctx.state["draggan.templates"], strict=True):
            row, col = round(row), round(col)
            up, down = max(row - self.r_p, 0), min(row + self.r_p + 1, h)
            left, right = max(col - self.r_p, 0), min(col + self.r_p + 1, w)
            patch = features[:, :, up:down, left:right]
            dist = torch.linalg.norm(patch - ref.reshape(1, -1, 1, 1), dim=1)
            idx = int(torch.min(dist.view(1, -1), -1)[1])
            width = right - left
            new.append([idx // width + up, idx % width + left])
        return TrackResult(handles=torch.tensor(new, dtype=torch.float64).reshape(-1, 2))


TRACKERS = {
    "nearest": NearestTracker,
    "draggan": DragGANCodeTracker,
    "discriminative": DiscriminativeTracker,
    "semantic": SemanticRegionTracker,
    "fast": FastTracker,
}

register(
    Param(
        "tracker",
        str,
        "nearest",
        "point-tracking part",
        "loop",
        choices=tuple(TRACKERS),
        common=True,
    )
)


def build_tracker(p: Mapping[str, Any]) -> Tracker:
    """The tracker a resolved parameter set names, wrapped in backtracking when ``backtrack`` is set, and in periodic
    tracking when ``track_every > 1`` or ``stuck_rounds > 0`` (which needs its count)."""
    tracker = TRACKERS[p["tracker"]].from_params(p)
    if p["backtrack"]:
        tracker = BacktrackingTracker(tracker, max_jump=p["backtrack_max_jump"])
    if p["track_every"] > 1 or p["stuck_rounds"] > 0 or p["track_lagged"]:
        tracker = PeriodicTracker(tracker, every=p["track_every"], lagged=p["track_lagged"])
    return tracker
