"""CLIPDrag's engine-independent parts: fast point tracking and the gradient fusion of global-local supervision."""

import itertools

import torch

from dragkit.core.loop import DragContext, FeatureOutput, drag_loop
from dragkit.parts import FastTracker, FixedSchedule, NearestTracker, PatchSupervision


def ctx_for(f0, handles, targets):
    h = torch.tensor(handles, dtype=torch.float64)
    t = torch.tensor(targets, dtype=torch.float64)
    return DragContext.from_features(f0, h, t)


def test_fast_tracking_only_takes_candidates_closer_to_the_target():
    f = torch.zeros(1, 3, 16, 16)
    f[0, :, 8, 8] = 1.0  # the handle's content
    ctx = ctx_for(f, [[8.0, 8.0]], [[8.0, 14.0]])
    moved = f.clone()
    moved[0, :, 8, 8] = 0.0
    moved[0, :, 8, 6] = 1.0  # the content went backwards, away from the target
    h = ctx.handles0.clone()
    NearestTracker(r_p=3).prepare(ctx)
    FastTracker(r_p=3).prepare(ctx)
    assert NearestTracker(r_p=3).track(moved, h, ctx).handles[0].tolist() == [8.0, 6.0]
    out = FastTracker(r_p=3).track(moved, h, ctx).handles[0]
    assert float((out - ctx.targets[0]).norm()) < 6.0  # strictly closer: it cannot follow the content back
    on_target = ctx_for(f, [[8.0, 14.0]], [[8.0, 14.0]])
    FastTracker().prepare(on_target)  # a handle on its target has no closer candidate
    assert FastTracker().track(f, on_target.handles0, on_target).handles[0].tolist() == [8.0, 14.0]


def test_fast_tracking_never_increases_the_distance_to_the_target():
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 24, 24, generator=g)
    out = drag_loop(
        latent,
        lambda z: FeatureOutput(features=z),
        torch.tensor([[4.0, 5.0], [18.0, 20.0]], dtype=torch.float64),
        torch.tensor([[15.0, 19.0], [6.0, 3.0]], dtype=torch.float64),
        tracker=FastTracker(r_p=3),
        supervision=PatchSupervision(),
        schedule=FixedSchedule(max_steps=30, stop_distance=0.5),
        optimizer=lambda p: torch.optim.Adam(p, lr=0.05),
    )
    for i in range(2):
        d = [r["distances"][i] for r in out.trajectory]
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(d))
        assert d[-1] < d[0]
    assert out.stop_reason == "arrived"  # at least one pixel closer on every step: it converges


def test_glms_fusion_on_hand_made_gradient_pairs():
    from dragkit.parts.fusion import glms

    gl = torch.tensor([2.0, 0.0])
    for form in ("projection", "code"):
        # no global gradient: the drag alone, exactly
        assert torch.equal(glms(gl, torch.zeros(2), form, 0.7), gl)
    # aligned (θ = 0): projection adds g_g whole; the code form scales it by sin 0 = 0
    assert torch.allclose(glms(gl, torch.tensor([1.0, 0.0]), "projection", 0.5), torch.tensor([2.5, 0.0]))
    assert torch.allclose(glms(gl, torch.tensor([1.0, 0.0]), "code", 0.5), gl)
    # orthogonal (θ = 90°): both add it whole (sin 90° = 1)
    for form in ("projection", "code"):
        assert torch.allclose(glms(gl, torch.tensor([0.0, 3.0]), form, 0.5), torch.tensor([2.0, 1.5]))
    # opposed at 135°: projection drops the opposing part and keeps the orthogonal rest; code scales by cos 135°
    gg = torch.tensor([-1.0, 1.0])
    assert torch.allclose(glms(gl, gg, "projection", 0.5), torch.tensor([2.0, 0.5]))
    c = -(2**-0.5)
    assert torch.allclose(glms(gl, gg, "code", 0.5), gl + 0.5 * c * gg)
    # exactly opposed: projection leaves the drag untouched
    assert torch.allclose(glms(gl, torch.tensor([-4.0, 0.0]), "projection", 0.7), gl)


def test_the_fusion_part_without_a_clip_gradient_is_the_drag_gradient():
    from dragkit.parts.fusion import GlobalLocalFusion

    g = {"motion": torch.randn(1, 4, 8, 8), "other": torch.randn(1, 4, 8, 8)}
    assert torch.equal(GlobalLocalFusion()(g, None), g["motion"] + g["other"])


def test_fusion_without_an_edit_prompt_is_exactly_the_drag(gan_pipe):
    import numpy as np

    from dragkit import DragRequest

    face = gan_pipe.generate(27)
    mask = np.zeros((64, 64), bool)
    mask[35:60, 20:45] = True
    req = DragRequest(face.image, [(32, 49)], [(32, 44)], mask=mask, seed=0)
    plain = gan_pipe(req, code=face.code, progress=False, drag_steps=6, stop_distance=0)
    fused = gan_pipe(req, code=face.code, progress=False, drag_steps=6, stop_distance=0, fusion="glms")
    assert fused.params["fusion"] == "glms" and plain.params["fusion"] == "none"
    assert np.array_equal(np.asarray(plain.image), np.asarray(fused.image))
    assert [r["handles"] for r in plain.trajectory] == [r["handles"] for r in fused.trajectory]
