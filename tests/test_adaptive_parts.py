"""AdaptiveDrag's engine-independent parts: the adaptive step schedule and position-supervised backtracking."""

import itertools
from dataclasses import dataclass

import torch

from dragkit.core.loop import DragContext, FeatureOutput, TrackResult, drag_loop
from dragkit.methods import build_parts, get_method
from dragkit.parts import AdaptiveSchedule, BacktrackingTracker, FixedSchedule, NearestTracker, PatchSupervision


@dataclass(frozen=True)
class Scripted:
    """A tracker that moves every handle ``px`` pixels towards its target on every ``every``-th step."""

    px: float = 1.0
    every: int = 1

    def prepare(self, ctx: DragContext) -> None:
        pass

    def track(self, features, handles, ctx):
        if ctx.step % self.every:
            return TrackResult(handles=handles.clone())
        d = ctx.targets - handles
        n = d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return TrackResult(handles=handles + d / n * torch.minimum(n, torch.tensor(self.px, dtype=d.dtype)))


def run(tracker, schedule, start=(5.0, 5.0), target=(5.0, 25.0)):
    latent = torch.randn(1, 4, 32, 32)
    return drag_loop(
        latent,
        lambda z: FeatureOutput(features=z),
        torch.tensor([start], dtype=torch.float64),
        torch.tensor([target], dtype=torch.float64),
        tracker=tracker,
        supervision=PatchSupervision(),
        schedule=schedule,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
    )


def test_adaptive_steps_give_back_the_steps_on_which_a_handle_fell_behind():
    # 20 px to go in a budget of 20: expected 1 px per step
    on_pace = run(Scripted(every=1), AdaptiveSchedule(max_steps=20, stop_distance=0.5, cap=500))
    assert (on_pace.steps, on_pace.stop_reason) == (20, "arrived")
    half = run(Scripted(every=2), AdaptiveSchedule(max_steps=20, stop_distance=0.5, cap=500))
    fixed = run(Scripted(every=2), FixedSchedule(max_steps=20, stop_distance=0.5))
    assert (fixed.steps, fixed.stop_reason) == (20, "max_steps")  # a fixed budget ends halfway
    assert half.stop_reason == "arrived" and 39 <= half.steps <= 40  # twice the steps at half the pace
    stalled = run(Scripted(px=0.0), AdaptiveSchedule(max_steps=20, stop_distance=0.5, cap=50))
    assert (stalled.steps, stalled.stop_reason) == (50, "step_cap")


def test_whole_pixel_moves_at_the_expected_pace_are_not_behind():
    # 1 px every 2nd step against an expected 0.5 px per step: on pace on average, behind on every other step when
    # compared step by step (which would give it steps up to the cap); the cumulative rule adds at most one or two
    out = run(Scripted(every=2), AdaptiveSchedule(max_steps=40, stop_distance=0.5, cap=500))
    assert out.stop_reason == "arrived" and 40 <= out.steps <= 42


def test_the_adaptive_budget_stops_at_the_cap_and_arrival_still_ends_early():
    out = run(Scripted(every=3), AdaptiveSchedule(max_steps=20, stop_distance=0.5, cap=25))
    assert out.steps == 25 and out.stop_reason == "step_cap"
    out = run(Scripted(every=1), AdaptiveSchedule(max_steps=40, stop_distance=0.5, cap=500))
    assert out.steps == 20 and out.stop_reason == "arrived"  # twice the expected pace: done in half the budget


@dataclass(frozen=True)
class Wild:
    """A tracker whose candidates wander at random, often away from the target or far off."""

    seed: int = 0

    def prepare(self, ctx):
        ctx.state["wild"] = torch.Generator().manual_seed(self.seed)

    def track(self, features, handles, ctx):
        jump = torch.randint(-4, 5, handles.shape, generator=ctx.state["wild"]).to(handles.dtype)
        return TrackResult(handles=handles + jump, confidences=torch.full((len(handles),), 0.7, dtype=torch.float64))


def test_backtracking_never_lets_a_handle_move_away_from_its_target():
    tracker = BacktrackingTracker(Wild(), max_jump=3.0)
    out = run(tracker, FixedSchedule(max_steps=200, stop_distance=0.5), start=(16.0, 16.0), target=(4.0, 28.0))
    d = [r["distances"][0] for r in out.trajectory]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(d))
    h = [torch.tensor(r["handles"][0]) for r in out.trajectory]
    assert all(float((b - a).norm()) <= 3.0 + 1e-9 for a, b in itertools.pairwise(h))
    held = [r["backtracked"][0] for r in out.trajectory[1:]]
    assert any(held) and not all(held)  # some wild candidates rejected, some accepted
    assert d[-1] < d[0] and all(r["confidences"] == [0.7] for r in out.trajectory[1:])  # confidences pass through


def test_backtracking_accepts_what_a_good_tracker_finds():
    out = run(BacktrackingTracker(Scripted(), max_jump=1.5), FixedSchedule(max_steps=40, stop_distance=0.5))
    assert out.stop_reason == "arrived" and not any(r["backtracked"][0] for r in out.trajectory[1:])


def test_parts_by_name_in_any_method():
    p = get_method("draggan").resolve({"backtrack": True, "schedule": "adaptive", "tracker": "discriminative"})
    parts = build_parts(p)
    assert isinstance(parts.tracker, BacktrackingTracker) and parts.tracker.max_jump == 3.0
    assert isinstance(parts.schedule, AdaptiveSchedule) and parts.schedule.cap == 500
    assert isinstance(build_parts(get_method("draggan").resolve()).tracker, NearestTracker)


def test_adaptivedrag_is_dragdiffusion_with_the_papers_numbers_and_parts():
    a, b = get_method("adaptivedrag").resolve(), get_method("dragdiffusion").resolve()
    assert get_method("adaptivedrag").engine == "diffusion"
    changed = {k: a[k] for k in a if a[k] != b[k]}
    assert changed == {
        "mask": "auto",
        "supervision": "semantic",
        "tracker": "semantic",
        "backtrack": True,
        "schedule": "adaptive",
        "drag_steps": 160,
        "inversion_strength": 0.8,
        "closs_weight": 100.0,
    }
    assert a["latent_lr"] == 0.01 and a["lam"] == 0.1  # the paper's, as DragDiffusion's


def test_adaptivedrag_gan_is_draggan_with_the_automatic_mask():
    a, b = get_method("adaptivedrag-gan").resolve(), get_method("draggan").resolve()
    assert get_method("adaptivedrag-gan").engine == "gan"
    assert {k: a[k] for k in a if a[k] != b[k]} == {"mask": "auto"}  # the part that helped on the DCGAN
