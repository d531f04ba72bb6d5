"""GoodDrag's parts alone on synthetic features (information-preserving supervision, periodic tracking and its early
stop), then the alternating drag-and-denoise driver on the tiny SD: the order of its UNet calls, and the preset."""

import numpy as np
import pytest
import torch

from dragkit import DragRequest
from dragkit.core.loop import DragContext, FeatureOutput, drag_loop
from dragkit.parts import FixedSchedule, InitialTemplateSupervision, NearestTracker, PeriodicTracker

from .helpers import image


def blob(center, size=(24, 24), sigma=2.0):
    rr, cc = torch.meshgrid(torch.arange(size[0], dtype=torch.float64), torch.arange(size[1], dtype=torch.float64),
                            indexing="ij")  # fmt: skip
    g = torch.exp(-((rr - center[0]) ** 2 + (cc - center[1]) ** 2) / (2 * sigma**2))
    return torch.stack([g, 2 * g, rr / 24]).float()[None]


def test_information_preserving_supervision_keeps_the_original_template():
    """The template is the initial features around the original handle, whatever the current features hold there:
    a map whose content sits one stride ahead of the current handle costs nothing, and changing the features at
    the current handle does not move the template."""
    h0, t = torch.tensor([[12.0, 6.0]]), torch.tensor([[12.0, 18.0]])
    ctx = DragContext.from_features(blob((12, 6)), h0, t)
    sup = InitialTemplateSupervision(r_m=2, step=4.0)
    handle = torch.tensor([[12.0, 8.0]])
    ahead = blob((12, 12))  # the original content, 4 px ahead of the current handle (the stride)
    assert float(sup.loss(ahead, handle, torch.tensor([True]), ctx)) < 1e-4
    disturbed = ahead.clone()
    disturbed[..., 10:15, 6:10] += 5  # the current handle's own neighbourhood changes: the template does not
    assert float(sup.loss(disturbed, handle, torch.tensor([True]), ctx)) < 1e-4
    assert torch.equal(ctx.features0, blob((12, 6)))


def test_periodic_tracking_tracks_every_nth_step_and_the_schedule_stops_when_nothing_moves():
    f0 = blob((12, 6))
    ctx = DragContext.from_features(f0, torch.tensor([[12.0, 6.0]], dtype=torch.float64), torch.tensor([[12.0, 18.0]]))
    tracker = PeriodicTracker(NearestTracker(r_p=3), every=3)
    tracker.prepare(ctx)
    moved = blob((12, 8))
    ctx.step = 0  # a phase's entry: tracked, but only rounds after updates count towards "stuck"
    assert tracker.track(f0, torch.tensor([[12.0, 6.0]], dtype=torch.float64), ctx).handles.tolist() == [[12.0, 6.0]]
    assert "track.unchanged" not in ctx.state
    for step in (1, 2):  # not a tracking step: the handle stays
        ctx.step = step
        assert tracker.track(moved, torch.tensor([[12.0, 6.0]], dtype=torch.float64), ctx).handles.tolist() == [
            [12.0, 6.0]
        ]
    ctx.step = 3
    assert tracker.track(moved, torch.tensor([[12.0, 6.0]], dtype=torch.float64), ctx).handles.tolist() == [
        [12.0, 8.0]
    ]
    assert ctx.state["track.unchanged"] == 0
    # a drag that moves nothing: every round leaves the handle in place, and the schedule calls it stuck
    still = dict(
        tracker=PeriodicTracker(NearestTracker(r_p=3), every=2), supervision=InitialTemplateSupervision(r_m=1)
    )
    out = drag_loop(
        torch.zeros(1),
        lambda z: FeatureOutput(f0 + 0 * z.sum()),
        torch.tensor([[12.0, 6.0]]),
        torch.tensor([[12.0, 18.0]]),
        schedule=FixedSchedule(max_steps=100, stop_distance=1.0, stuck=3),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        **still,
    )
    assert out.stop_reason == "stuck" and out.steps == 6  # rounds at steps 2, 4, 6 moved nothing


def masked_request():
    m = np.zeros((80, 96), bool)
    m[16:64, 24:88] = True
    return DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo", mask=m, seed=3)


QUICK = dict(resize_width=0, lora="none", mutual_attn_start_layer=4, inference_steps=20, drag_phases=3, drag_steps=4)


def test_alternating_drag_and_denoise_runs_in_the_documented_order(pipe):
    """The UNet's calls, in order: the un-edited trajectory at each phase's timestep (batch 1), then at each phase
    the drag's forwards (batch 1) followed by one denoising step of [original, edited] (batch 2), then the rest of
    the schedule (batch 2, mutual attention on)."""
    calls = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((int(args[1]), args[0].shape[0])), with_kwargs=True
    )
    try:
        out = pipe(masked_request(), method="gooddrag", progress=False, stop_distance=0, stuck_rounds=0, **QUICK)
    finally:
        hook.remove()
    ts = [int(t) for t in pipe.scheduler.timesteps]
    start = ts.index(out.info["drag_timestep"])
    phase_ts = ts[start : start + 3]
    n_inv = 20 - start
    calls = calls[n_inv:]  # after the inversion (batch 1, inverse timesteps)
    assert calls[:3] == [(t, 1) for t in phase_ts]  # 0. the un-edited trajectory
    rest = calls[3:]
    expected = []
    for t in phase_ts:  # 1. per phase: 1 + 4 drag forwards (tracking first), then one denoising step of both
        expected += [(t, 1)] * 5 + [(t, 2)]
    expected += [(t, 2) for t in ts[start + 3 :]]  # 2. the rest of the schedule
    assert rest == expected
    assert out.info["drag_phases"] == 3 and out.info["steps"] == 12 and out.info["stop_reason"] == "max_steps"
    assert [r["phase"] for r in out.trajectory] == [0] * 5 + [1] * 5 + [2] * 5
    assert [r["step"] for r in out.trajectory] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12]


def test_gooddrag_moves_features_towards_the_targets_and_stops_when_they_arrive(pipe):
    out = pipe(masked_request(), method="gooddrag", progress=False, **{**QUICK, "drag_steps": 12})
    p = out.params  # GoodDrag's code's (issue 34: tests/test_oracle_gooddrag.py)
    assert (p["supervision"], p["track_every"], p["lam"], p["patch_weight"], p["track_lagged"]) == (
        "initial",
        3,
        0.2,
        "side",
        True,
    )
    first, last = out.trajectory[0]["distances"][0], out.trajectory[-1]["distances"][0]
    assert last < first
    assert out.info["stop_reason"] in ("arrived", "max_steps", "stuck")


@pytest.mark.parametrize("name", ["gooddrag", "fastdrag"])
def test_the_new_presets_are_listed_with_their_parameters(name):
    from dragkit.interfaces.cli import params_table

    table = params_table(name)
    assert f"{name}: " in table and "sampler" in table
