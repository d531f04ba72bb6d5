"""The drag loop and its DragGAN parts on synthetic feature maps (no generator involved)."""

import torch

from dragkit.core.loop import DragContext, FeatureOutput, drag_loop
from dragkit.parts import FeatureMaskTerm, FixedSchedule, NearestTracker, PatchSupervision


def blob_features(center: torch.Tensor, size=(32, 32), sigma=2.0, channels=4) -> torch.Tensor:
    """A differentiable "generator": feature maps of a Gaussian blob at ``center`` (row, col) plus a fixed ramp."""
    h, w = size
    rr, cc = torch.meshgrid(torch.arange(h, dtype=center.dtype), torch.arange(w, dtype=center.dtype), indexing="ij")
    g = torch.exp(-((rr - center[0]) ** 2 + (cc - center[1]) ** 2) / (2 * sigma**2))
    chans = [g * (k + 1) for k in range(channels - 1)] + [rr / h * 0.01]
    return torch.stack(chans)[None]


def ctx_for(f0, handles, targets, mask=None):
    return DragContext.from_features(f0, handles, targets, mask)


def test_nearest_tracker_follows_a_translated_blob():
    f0 = blob_features(torch.tensor([10.0, 12.0]))
    ctx = ctx_for(f0, torch.tensor([[10.0, 12.0]]), torch.tensor([[14.0, 15.0]]))
    tr = NearestTracker(r_p=3)
    tr.prepare(ctx)
    moved = blob_features(torch.tensor([12.0, 14.0]))
    res = tr.track(moved, torch.tensor([[10.0, 12.0]]), ctx)
    assert res.handles.tolist() == [[12.0, 14.0]]
    # beyond the search window the tracker can only get as close as the window allows
    far = blob_features(torch.tensor([20.0, 12.0]))
    assert tr.track(far, torch.tensor([[10.0, 12.0]]), ctx).handles.tolist() == [[13.0, 12.0]]


def test_nearest_tracker_ignores_a_distractor_outside_its_window():
    f0 = blob_features(torch.tensor([10.0, 10.0]))
    two = blob_features(torch.tensor([11.0, 10.0])) + blob_features(torch.tensor([10.0, 25.0]))
    ctx = ctx_for(f0, torch.tensor([[10.0, 10.0]]), torch.tensor([[14.0, 10.0]]))
    tr = NearestTracker(r_p=3)
    tr.prepare(ctx)
    assert tr.track(two, torch.tensor([[10.0, 10.0]]), ctx).handles.tolist() == [[11.0, 10.0]]


def test_patch_supervision_gradient_moves_content_towards_target():
    c = torch.tensor([10.0, 10.0], requires_grad=True)
    f = blob_features(c)
    ctx = ctx_for(f.detach(), torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]))
    loss = PatchSupervision(r_m=2).loss(f, torch.tensor([[10.0, 10.0]]), torch.tensor([True]), ctx)
    loss.backward()
    # gradient descent on the blob centre moves it to larger columns (towards the target), not along rows
    assert c.grad[1] < 0
    assert abs(c.grad[0]) < 1e-6


def test_arrived_handles_are_left_out_of_the_loss():
    f = blob_features(torch.tensor([10.0, 10.0]))
    ctx = ctx_for(f, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]))
    assert PatchSupervision().loss(f, torch.tensor([[10.0, 10.0]]), torch.tensor([False]), ctx).item() == 0.0


def run_blob_drag(start, target, steps=200, **kw):
    record = []
    out = drag_loop(
        torch.tensor(start, dtype=torch.float64),
        lambda z: FeatureOutput(blob_features(z)),
        torch.tensor([start]),
        torch.tensor([target]),
        tracker=NearestTracker(r_p=3),
        supervision=PatchSupervision(r_m=2),
        schedule=FixedSchedule(max_steps=steps, stop_distance=1.0),
        optimizer=lambda p: torch.optim.Adam(p, lr=0.1),
        callback=record.append,
        **kw,
    )
    return out, record


def test_loop_drags_a_blob_to_its_target_and_stops_early():
    out, record = run_blob_drag([10.0, 10.0], [10.0, 18.0])
    assert out.stop_reason == "arrived"
    assert out.steps < 200
    # the latent (the blob's true centre) followed the drag, and the tracker saw it
    assert torch.allclose(out.latent, torch.tensor([10.0, 18.0], dtype=torch.float64), atol=1.2)
    assert (out.handles - torch.tensor([[10.0, 18.0]])).norm() < 1.0
    # one callback dict per step, the last marked final; the features ran 1 + steps times
    assert [e["step"] for e in record] == list(range(out.steps + 1))
    assert record[-1]["final"] and not record[0]["final"]
    assert {"step", "latent", "features", "handles", "targets", "distances", "losses", "active"} <= set(record[0])
    assert record[0]["losses"]["motion"] > 0 and record[-1]["losses"] == {}
    assert len(out.trajectory) == out.steps + 1


def test_loop_stops_at_once_when_every_handle_has_arrived():
    calls = []

    def feats(z):
        calls.append(1)
        return FeatureOutput(blob_features(z))

    out = drag_loop(
        torch.tensor([10.0, 10.0]),
        feats,
        torch.tensor([[10.0, 10.0]]),
        torch.tensor([[10.0, 10.5]]),
        tracker=NearestTracker(),
        supervision=PatchSupervision(),
        schedule=FixedSchedule(max_steps=50, stop_distance=1.0),
        optimizer=lambda p: torch.optim.Adam(p, lr=0.1),
    )
    assert out.steps == 0 and out.stop_reason == "arrived" and len(calls) == 1
    assert torch.equal(out.latent, torch.tensor([10.0, 10.0]))


def test_loop_respects_budget_and_cancel():
    out, _ = run_blob_drag([10.0, 10.0], [10.0, 25.0], steps=3)
    assert out.steps == 3 and out.stop_reason == "max_steps"
    n = []
    out, _ = run_blob_drag([10.0, 10.0], [10.0, 25.0], cancel=lambda: n.append(1) or len(n) > 2)
    assert out.stop_reason == "cancelled" and out.steps == 2


def test_fusion_of_one_group_equals_plain_backward():
    a, _ = run_blob_drag([10.0, 10.0], [12.0, 16.0], steps=5)
    b, _ = run_blob_drag([10.0, 10.0], [12.0, 16.0], steps=5, fusion=lambda grads, ctx: grads["motion"])
    assert torch.allclose(a.latent, b.latent)


def test_feature_mask_term_only_with_a_mask():
    f0 = blob_features(torch.tensor([10.0, 10.0]))
    f1 = blob_features(torch.tensor([11.0, 10.0]))
    term = FeatureMaskTerm(lam=10.0)
    assert term(FeatureOutput(f1), ctx_for(f0, None, None)) is None
    everywhere = term(FeatureOutput(f1), ctx_for(f0, None, None, mask=torch.zeros(32, 32)))
    nowhere = term(FeatureOutput(f1), ctx_for(f0, None, None, mask=torch.ones(32, 32)))
    assert everywhere.item() > 0 and nowhere.item() == 0


def test_mask_term_keeps_a_second_blob_still():
    """Two blobs, one dragged: with a mask around the dragged one only, the other stays where it was."""

    def two(z):
        return FeatureOutput(blob_features(z[:2]) + blob_features(z[2:]))

    def run(mask):
        return drag_loop(
            torch.tensor([10.0, 8.0, 10.0, 14.0]),
            two,
            torch.tensor([[10.0, 8.0]]),
            torch.tensor([[10.0, 2.0]]),
            tracker=NearestTracker(),
            supervision=PatchSupervision(r_m=2),
            schedule=FixedSchedule(max_steps=60, stop_distance=1.0),
            optimizer=lambda p: torch.optim.Adam(p, lr=0.1),
            terms=[FeatureMaskTerm(lam=50.0)],
            mask=mask,
        ).latent

    m = torch.zeros(32, 32)
    m[:, :11] = 1
    free, masked = run(None), run(m)
    assert (masked[2:] - torch.tensor([10.0, 14.0])).norm() < (free[2:] - torch.tensor([10.0, 14.0])).norm()
    assert (masked[2:] - torch.tensor([10.0, 14.0])).norm() < 0.5


def test_a_diverging_drag_is_a_clear_error():
    import pytest

    from dragkit.core.errors import DivergedError

    with pytest.raises(DivergedError, match="lower latent_lr"):
        drag_loop(
            torch.tensor([10.0, 10.0]),
            lambda z: FeatureOutput(blob_features(z) * float("inf")),
            torch.tensor([[10.0, 10.0]]),
            torch.tensor([[10.0, 20.0]]),
            tracker=NearestTracker(),
            supervision=PatchSupervision(),
            schedule=FixedSchedule(max_steps=5, stop_distance=1.0),
            optimizer=lambda p: torch.optim.Adam(p, lr=0.1),
        )
