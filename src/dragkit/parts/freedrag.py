"""FreeDrag's parts (Ling et al., FreeDrag: Feature Dragging for Reliable Point-based Image Editing, CVPR 2024): an
adaptively updated template per point, a line search along the drag instead of point tracking, and rounds of a few
updates that end early once every point's template loss is small.

In the shared loop they are a supervision, a tracker and a schedule that keep their state in the context:

- :class:`AdaptiveTemplates`: each point's template (its initial features on the patch around the handle) and the
  rule that blends the features found at the point into it after each round;
- :class:`TemplateSupervision`: the motion loss, the distance of the features on the patch around each moving point
  to that point's template, every point included (an arrived one is held where it is);
- :class:`LineSearchTracker`: at the end of each round (``round_updates`` updates, or fewer when every point's loss
  was under ``threshold_l_ratio · l_expected``) it updates the templates, decides which points have arrived, and
  places each other point on the segment to its target by a line search in the latest features;
- :class:`RoundSchedule`: stops when every point has arrived (close to its target **and** its loss small), or when
  the budget is spent;
- :class:`MeanLatentMaskTerm`: DragDiffusion's mask term with a mean over the latent instead of a sum
  (``mask_reduction=mean``, FreeDrag's code).

``sampler=freedrag`` (:mod:`dragkit.methods.drivers.freedrag`) runs the shared loop with them. How their code does
each step: tests/oracle/freedrag/README.md and docs/freedrag.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import ParameterError
from ..core.geometry import patch_offsets, sample
from ..core.loop import DragContext, FeatureOutput, TrackResult
from ..core.params import Param, default, register
from . import supervision  # noqa: F401 - registers r_m and patch_shape, the template patch
from .terms import LatentMaskTerm

register(
    Param(
        "l_expected",
        float,
        1.0,
        "FreeDrag: the template distance the line search aims a point's next position at; a point's loss under "
        "threshold_l_ratio × this counts as arrived (with stop_distance) and ends a round early, and it sets how "
        "fast the templates adapt",
        "engine:diffusion",
        min=0,
        min_exclusive=True,
        group="freedrag",
        common=True,
    ),
    Param(
        "d_max",
        float,
        5.0,
        "FreeDrag: the farthest a line search moves a point towards its target (supervision-grid pixels); a "
        "back-tracking search steps back by up to this and searches twice as far",
        "engine:diffusion",
        min=0,
        min_exclusive=True,
        group="freedrag",
        common=True,
    ),
    Param(
        "threshold_l_ratio",
        float,
        0.5,
        "FreeDrag: threshold_l = this × l_expected; a loss under it ends a round early, lets the next search move "
        "forward, and counts towards arrival",
        "engine:diffusion",
        min=0,
        min_exclusive=True,
        group="freedrag",
    ),
    Param(
        "search_points",
        int,
        10,
        "FreeDrag: candidate positions of a line search, evenly spaced on its segment (the point itself excluded)",
        "engine:diffusion",
        min=1,
        max=1000,
        group="freedrag",
    ),
    Param(
        "round_updates",
        int,
        5,
        "FreeDrag: the most updates of one round, the points fixed, before the templates and points are updated",
        "engine:diffusion",
        min=1,
        max=1000,
        group="freedrag",
    ),
    Param(
        "mask_reduction",
        str,
        "sum",
        "sampler=freedrag: the latent mask term over the 4×h×w latent, sum (DragDiffusion's, lam 0.1) or mean "
        "(FreeDrag's code, lam 10)",
        "engine:diffusion",
        choices=("sum", "mean"),
        group="freedrag",
    ),
)

STATE = "freedrag"  # the key of the parts' state in the context


def _state(ctx: DragContext, part: str) -> dict[str, Any]:
    st = ctx.state.get(STATE)
    if st is None:
        raise ParameterError(
            f"{part} reads the templates and rounds that LineSearchTracker keeps: use FreeDrag's parts together "
            "(freedrag_parts, sampler=freedrag)"
        )
    return st


@dataclass(frozen=True)
class AdaptiveTemplates:
    """FreeDrag's template features (Ling et al. 2024, §3.2; their code's rule).

    Point ``k``'s template ``T_k`` is, at the start, the initial features sampled on the patch around the handle,
    ``F₀(p_k⁰ + o)`` for the ``(2r_m+1)²`` offsets ``o`` (bilinear, sub-pixel). The distance of the features at a
    position ``p`` to it is ``D_k(F, p) = mean_{o, c} |F(p + o) − T_k|``. After each round, with ``c_k = F(p_k + o)``
    read at the point on the round's last latent and ``L_k = D_k(F, p_k)``::

        T_k ← w_k · c_k + (1 − w_k) · T_k,   w_k = 1 / (1 + exp(a · (L_k − b))),  a = ln 9 / (0.6 l),  b = 0.2 l

    with ``l = l_expected``: a point whose features stayed close to its template (``L_k`` small) takes much of the
    new appearance, one that drifted keeps its template (``w = 0.5`` at ``L = b``, ``0.1`` at ``L = 0.8 l``). A
    point that has arrived takes the new features entirely (``w = 1``), so its loss then holds it where it is.
    """

    r_m: int = default("r_m")
    shape: str = default("patch_shape")
    l_expected: float = default("l_expected")

    @property
    def offsets(self) -> Tensor:
        return patch_offsets(self.r_m, self.shape)

    def initial(self, features0: Tensor, handles0: Tensor) -> Tensor:
        """``(N, K, C)``: each handle's starting template."""
        return sample(features0, handles0[:, None, :] + self.offsets.to(handles0)).detach()

    def distance(self, features: Tensor, points: Tensor, template: Tensor) -> Tensor:
        """``D(F, p)`` of ``(M, 2)`` positions against one ``(K, C)`` template, or of ``(N, 2)`` points against their
        ``(N, K, C)`` templates: mean L1 over the patch and channels, ``(M,)`` or ``(N,)``."""
        return (sample(features, points[:, None, :] + self.offsets.to(points)) - template).abs().mean((-2, -1))

    def weight(self, loss: Tensor) -> Tensor:
        """``w(L)``, the weight the new features get in the blend."""
        a = math.log(9) / (0.6 * self.l_expected)
        return 1 / (1 + torch.exp(a * (loss - 0.2 * self.l_expected)))

    def current(self, features: Tensor, points: Tensor) -> Tensor:
        """``(N, K, C)``: the features on each point's patch, ``c_k``."""
        return sample(features, points[:, None, :] + self.offsets.to(points)).detach()

    def update(self, templates: Tensor, current: Tensor, loss: Tensor, arrived: Tensor) -> Tensor:
        """The templates after a round: ``w·c + (1 − w)·T`` with ``w = w(L)``, or ``1`` for an arrived point."""
        w = torch.where(arrived, torch.ones_like(loss), self.weight(loss))[:, None, None]
        return w * current + (1 - w) * templates


@dataclass(frozen=True)
class TemplateSupervision:
    """FreeDrag's motion loss (Ling et al. 2024, §3.2): ``L = Σ_k mean_{o, c} |F(p_k + o) − sg(T_k)|``, the features on
    the patch around each **moving point** ``p_k`` (where the line search put it) pulled towards the point's template
    (:class:`AdaptiveTemplates`). Every point is in the loss, also one that has arrived (``active`` is not read):
    its template is then the features it had, so its term holds it there. Each update's per-point values (before
    the update) are kept for :class:`LineSearchTracker`, which ends rounds and chooses search branches by them."""

    templates: AdaptiveTemplates = AdaptiveTemplates()

    def loss(self, features: Tensor, handles: Tensor, active: Tensor, ctx: DragContext) -> Tensor:
        st = _state(ctx, "TemplateSupervision")
        per_point = self.templates.distance(features, handles, st["templates"])
        st["losses"].append(per_point.detach())
        return per_point.sum()


@dataclass(frozen=True)
class LineSearchTracker:
    """FreeDrag's line search in place of point tracking (Ling et al. 2024, §3.3; their code's rule), run at the end
    of each round of updates.

    A round is up to ``round_updates`` updates with the points fixed; it ends sooner after an update whose losses
    (computed before it) were all under ``threshold_l = threshold_l_ratio · l_expected``. At a round's end, on the
    features of its last latent: each point's loss ``L_k``; the point has **arrived** when it is within
    ``stop_distance`` of its target and ``L_k ≤ threshold_l`` (it can fall back later); the templates are updated
    (:class:`AdaptiveTemplates`). Then every point not arrived is placed, with ``L⁰_k`` its loss before the round's
    first update, ``q`` its target, ``r = min(d_max / ‖q − p‖, 1)``:

    - ``L_k < threshold_l`` (**search**): candidates ``p + (j/n)·r·(q − p)``, ``j = 1..n`` (``n = search_points``; the
      point itself is not one, so it always moves, at most ``d_max`` and never past its target), the one whose
      distance to the template is closest to ``l_expected``;
    - ``L_k < L⁰_k`` (**keep**): the round made progress; the point stays for another round;
    - otherwise (**backtrack**): the point steps back, away from its target, to ``p' = p − r·(q − p)``, and the
      candidates span ``p' → q`` up to ``2·d_max``; the one nearest the template wins.

    The first call (the start of the edit, on the starting latent's features) searches every point (``L = L⁰ = 0``).
    A back-tracking step that would leave the grid stops at its edge (their code reads past it). Each round's
    start is noted in the step's record: ``round``, the ``search`` branch per point (``arrived`` for those not
    searched), the ``chosen`` candidate's index (``None`` for keep/arrived) and the ``loss_end`` that decided it; the
    end of the last round only its ``loss_end``.
    """

    templates: AdaptiveTemplates = AdaptiveTemplates()
    d_max: float = default("d_max")
    threshold_ratio: float = default("threshold_l_ratio")
    n: int = default("search_points")
    round_updates: int = default("round_updates")
    stop_distance: float = default("stop_distance")

    @property
    def threshold_l(self) -> float:
        return self.threshold_ratio * self.templates.l_expected

    def prepare(self, ctx: DragContext) -> None:
        n = len(ctx.handles0)
        zeros = torch.zeros(n)
        ctx.state[STATE] = {
            "templates": self.templates.initial(ctx.features0, ctx.handles0.to(torch.float64)),
            "arrived": torch.zeros(n, dtype=torch.bool),
            "loss_first": zeros.clone(),  # L⁰: before the first update of the last round
            "loss_end": zeros.clone(),  # L: after its last update
            "losses": [],  # this round's per-update losses (TemplateSupervision's)
            "rounds": 0,
        }

    def track(self, features: Tensor, handles: Tensor, ctx: DragContext) -> TrackResult:
        st = _state(ctx, "LineSearchTracker")
        losses = st["losses"]
        if losses:  # a round is under way: does it end here?
            if len(losses) < self.round_updates and float(losses[-1].max()) >= self.threshold_l:
                return TrackResult(handles=handles)
            current = self.templates.current(features, handles)
            loss = (current - st["templates"]).abs().mean((-2, -1))
            distance = (ctx.targets - handles).norm(dim=-1)
            arrived = (distance < self.stop_distance) & (loss.to(torch.float64) <= self.threshold_l)
            st["templates"] = self.templates.update(st["templates"], current, loss, arrived)
            st["arrived"], st["loss_first"], st["loss_end"] = arrived, losses[0], loss
            losses.clear()
            if bool(arrived.all()):  # no round follows
                return TrackResult(handles=handles, notes={"loss_end": loss.tolist()})
        elif ctx.step > 0:
            raise ParameterError(
                "LineSearchTracker ends its rounds by TemplateSupervision's losses: use the two together"
            )
        new, branches, chosen = handles.clone(), [], []
        for k in range(len(handles)):
            if st["arrived"][k]:
                branches.append("arrived")
                chosen.append(None)
                continue
            branch, index, point = self.search(features, handles[k], ctx.targets[k], st, k)
            new[k] = point
            branches.append(branch)
            chosen.append(index)
        notes = {"round": st["rounds"], "search": branches, "chosen": chosen, "loss_end": st["loss_end"].tolist()}
        st["rounds"] += 1
        return TrackResult(handles=new, notes=notes)

    def search(
        self, features: Tensor, p: Tensor, q: Tensor, st: dict[str, Any], k: int
    ) -> tuple[str, int | None, Tensor]:
        """One point's branch, the chosen candidate's index (``None`` when it keeps its place) and its new position."""
        loss_end, loss_first = float(st["loss_end"][k]), float(st["loss_first"][k])
        if loss_end < self.threshold_l:
            branch, start, reach = "search", p, self.d_max
        elif loss_end < loss_first:
            return "keep", None, p
        else:
            branch = "backtrack"
            back = min(self.d_max / (float((q - p).norm()) + 1e-8), 1.0)
            h, w = features.shape[-2:]
            start = p - back * (q - p)
            start = torch.stack([start[0].clamp(0, h - 1), start[1].clamp(0, w - 1)])
            reach = 2 * self.d_max
        end = start + min(reach / (float((q - start).norm()) + 1e-8), 1.0) * (q - start)
        s = torch.arange(1, self.n + 1, dtype=p.dtype)[:, None] / self.n
        cand = (1 - s) * start + s * end
        dist = self.templates.distance(features, cand, st["templates"][k])
        score = (dist - self.templates.l_expected).abs() if branch == "search" else dist
        index = int(torch.argmin(score))
        return branch, index, cand[index]


@dataclass(frozen=True)
class RoundSchedule:
    """FreeDrag's stop rule: ``"arrived"`` once every point has arrived by :class:`LineSearchTracker`'s rule (within
    ``stop_distance`` of its target **and** its template loss at most ``threshold_l``, decided at a round's end),
    ``"max_steps"`` once ``max_steps`` updates have been made (a round may be cut short by it)."""

    max_steps: int = default("drag_steps")
    stop_distance: float = default("stop_distance")

    def should_stop(self, step: int, distances: Tensor, ctx: DragContext) -> str | None:
        if bool(_state(ctx, "RoundSchedule")["arrived"].all()):
            return "arrived"
        if step >= self.max_steps:
            return "max_steps"
        return None


@dataclass(frozen=True)
class MeanLatentMaskTerm(LatentMaskTerm):
    """DragDiffusion's mask term (:class:`~dragkit.parts.terms.LatentMaskTerm`) with FreeDrag's code's reduction, the
    mean over the ``4 × h × w`` latent instead of the sum: ``lam · mean |x_{t−1}(ẑ) − x_{t−1}(z₀)| ⊙ (1 − M)``
    (``mask_reduction=mean``; their ``lam`` is 10 where DragDiffusion's is 0.1). ``None`` without a mask."""

    def __call__(self, out: FeatureOutput, ctx: DragContext) -> Tensor | None:
        if ctx.mask is None or self.lam == 0 or out.denoised is None or ctx.initial.denoised is None:
            return None
        prev, prev0 = out.denoised, ctx.initial.denoised
        m = F.interpolate(ctx.mask[None, None].float(), size=prev.shape[-2:], mode="nearest").to(prev)
        return self.lam * ((prev - prev0).abs() * (1 - m)).mean()


@dataclass
class FreeDragParts:
    """The parts FreeDrag's rounds are made of, built from one resolved parameter set."""

    tracker: LineSearchTracker
    supervision: TemplateSupervision
    schedule: RoundSchedule


def freedrag_parts(p: Mapping[str, Any]) -> FreeDragParts:
    """FreeDrag's tracker, supervision and schedule from a resolved parameter set (the patch: ``r_m``,
    ``patch_shape``; the budget: ``drag_steps``; arrival: ``stop_distance``)."""
    templates = AdaptiveTemplates(r_m=p["r_m"], shape=p["patch_shape"], l_expected=p["l_expected"])
    tracker = LineSearchTracker(
        templates,
        d_max=p["d_max"],
        threshold_ratio=p["threshold_l_ratio"],
        n=p["search_points"],
        round_updates=p["round_updates"],
        stop_distance=p["stop_distance"],
    )
    schedule = RoundSchedule(max_steps=p["drag_steps"], stop_distance=p["stop_distance"])
    return FreeDragParts(tracker, TemplateSupervision(templates), schedule)


def latent_mask_term(p: Mapping[str, Any]) -> LatentMaskTerm:
    """The latent mask term ``mask_reduction`` names: the sum (DragDiffusion's) or the mean (FreeDrag's code)."""
    return (MeanLatentMaskTerm if p["mask_reduction"] == "mean" else LatentMaskTerm).from_params(p)
