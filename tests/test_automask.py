"""AdaptiveDrag's automatic mask: feature-space superpixels and the editable region they give each handle."""

import json

import numpy as np
import pytest
import torch

from dragkit import DragRequest
from dragkit.parts.automask import auto_mask, feature_superpixels, handle_region

from .helpers import dragkit

H = W = 64


def two_shapes():
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    a = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    b = (yy - 44) ** 2 + (xx - 46) ** 2 <= 9**2
    f = torch.zeros(3, H, W)
    f[0], f[1], f[2] = a.float(), b.float(), 0.2
    f += 0.05 * torch.randn(3, H, W, generator=torch.Generator().manual_seed(0))  # feature noise
    return f, a.numpy(), b.numpy()


@pytest.mark.parametrize("segments", [8, 20, 50])
def test_the_auto_mask_covers_the_handles_shape_and_not_a_far_one(segments):
    f, a, b = two_shapes()
    labels = feature_superpixels(f, segments, 10.0)
    assert labels.shape == (H, W) and labels.max() >= 2
    h = torch.tensor([[20.0, 14.0]], dtype=torch.float64)  # (row, col) inside shape A, dragged right within it
    t = torch.tensor([[20.0, 22.0]], dtype=torch.float64)
    m = auto_mask(labels, h, t, dilate=1)
    assert m[20, 14] and m[20, 22]
    assert (m & a).sum() >= 0.95 * a.sum()  # the superpixels follow the shape's edge
    assert not (m & b).any()  # the far shape may not change
    assert (m & ~a).sum() <= 100  # outside A: about the 1-px dilation ring


def test_the_half_plane_rule():
    labels = np.zeros((20, 20), np.int64)
    labels[:, 15:] = 1
    t = torch.tensor([10.0, 19.0], dtype=torch.float64)
    # the handle at the back of region 0: the half facing the target keeps ≥ 50% of it → the whole region
    whole = handle_region(labels, torch.tensor([10.0, 2.0], dtype=torch.float64), t)
    assert whole.sum() == (labels == 0).sum()
    # at its front edge the cut keeps 2 of 15 columns → only the part facing the target
    cut = handle_region(labels, torch.tensor([10.0, 13.0], dtype=torch.float64), t)
    assert cut.sum() == 20 * 2 and cut[:, 13:15].all() and not cut[:, 16:].any()


def test_mask_auto_in_the_gan_pipeline_and_a_user_mask_wins(gan_pipe):
    face = gan_pipe.generate(27)
    req = DragRequest(face.image, [(32, 49)], [(32, 44)], seed=0)
    res = gan_pipe(req, code=face.code, progress=False, mask="auto", drag_steps=3, auto_mask_segments=60)
    assert res.params["mask"] == "auto" and res.mask is not None and res.mask.shape == (64, 64)
    assert res.mask[49, 32] and res.mask[44, 32] and 0 < res.info["auto_mask"]["fraction"] < 0.3
    assert "mask" in res.trajectory[0]["losses"] and "auto_mask" in res.info["profile"]
    user = np.zeros((64, 64), bool)
    user[40:55, 25:40] = True
    res = gan_pipe(
        DragRequest(face.image, [(32, 49)], [(32, 44)], mask=user),
        code=face.code,
        progress=False,
        mask="auto",
        drag_steps=1,
    )
    assert res.params["mask"] == "given" and (res.mask == user).all() and "auto_mask" not in res.info


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_mask_auto_writes_the_mask_beside_the_result(tmp_path, face_png):
    out = tmp_path / "o.png"
    args = ["--method", "draggan", "--drag", "32,49:32,44", "--mask", "auto", "--set", "drag_steps=2", "-q"]
    r = dragkit("edit", face_png, *args, "-o", out)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    m = np.asarray(Image.open(tmp_path / "o.mask.png"))
    assert m.shape == (64, 64) and m[49, 32] == 255 and 0 < (m > 0).mean() < 0.5
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["params"]["mask"] == "auto" and rec["has_mask"]


def test_mask_as_a_parameter_is_none_or_auto(gan_pipe):
    from dragkit import ParameterError

    face = gan_pipe.generate(27)
    with pytest.raises(ParameterError, match="none or auto"):
        gan_pipe(DragRequest(face.image, [(32, 49)], [(32, 44)]), code=face.code, mask="mask.png")


def test_superpixel_spacing_and_semantic_offsets():
    from dragkit.parts.automask import semantic_offsets, superpixel_spacing

    labels = np.kron(np.arange(4).reshape(2, 2), np.ones((8, 8), np.int64))  # four 8×8 blocks
    assert superpixel_spacing(labels, 0) == pytest.approx(8.0)
    h = torch.tensor([4.0, 5.0], dtype=torch.float64)
    off = semantic_offsets(labels, h, torch.tensor([4.0, 12.0], dtype=torch.float64), radius=3, shape="square")
    pos = h + off
    assert (off[:, 1] >= 0).all()  # only the half facing the target (to the right)
    assert (pos[:, 1] <= 7).all() and (pos >= 0).all()  # and only inside the handle's block
    assert len(off) == 7 * 3  # rows 1..7, columns 5..7
    # a corner handle whose forward half leaves its block at once: a disc instead
    tiny = semantic_offsets(
        labels,
        torch.tensor([7.0, 7.0], dtype=torch.float64),
        torch.tensor([15.0, 15.0], dtype=torch.float64),
        radius=0,
    )
    assert len(tiny) == 5  # the radius-1 disc


def test_semantic_parts_follow_the_handles_shape():
    from dragkit.core.loop import DragContext
    from dragkit.parts import SemanticRegionSupervision, SemanticRegionTracker
    from dragkit.parts.automask import semantic_geometry

    f, a, _ = two_shapes()
    h = torch.tensor([[20.0, 14.0]], dtype=torch.float64)
    ctx = DragContext.from_features(f[None], h, h + torch.tensor([[0.0, 8.0]]))
    (geo,) = semantic_geometry(ctx, 8, 10.0, "square")
    assert geo["r"] > 7 and geo["r_m"] == int(geo["r"] // 7) and geo["r_p"] == int(2 * geo["r"] // 5)
    for key in ("motion", "track"):
        pos = (h[0] + geo[key]).long()
        assert a[pos[:, 0], pos[:, 1]].all() and (geo[key][:, 1] >= 0).all()
    # the loss runs on the cached geometry and pulls towards the target
    feats = f[None].clone().requires_grad_(True)
    loss = SemanticRegionSupervision(n_segments=8).loss(feats, h, torch.tensor([True]), ctx)
    assert loss.item() > 0
    # tracking: a look-alike of the handle's feature behind it (against the drag) is not a candidate
    tracker = SemanticRegionTracker(n_segments=8)
    tracker.prepare(ctx)
    moved = f[None].clone()
    moved[0, :, 20, 14 - 2] = f[:, 20, 14]  # an exact copy 2 px behind
    moved[0, :, 20, 14] += 0.5  # the handle's own pixel changed
    assert tracker.track(moved, h, ctx).handles[0, 1] >= 14
    from dragkit.parts import NearestTracker

    nearest = NearestTracker(r_p=3)
    nearest.prepare(ctx)
    assert nearest.track(moved, h, ctx).handles[0].tolist() == [20.0, 12.0]  # the plain window takes the copy


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    """A random SAM (vision encoder 64 px, 16×16 embeddings) saved as a folder, as a user's download would be."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamVisionConfig

    torch.manual_seed(0)
    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_dim=64,
        image_size=64,
        patch_size=4,
        output_channels=16,
        window_size=4,
        global_attn_indexes=[1],
    )
    folder = tmp_path_factory.mktemp("tiny-sam")
    SamModel(SamConfig(vision_config=vision.to_dict())).save_pretrained(folder)
    SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}).save_pretrained(folder)
    return str(folder)


def test_sam_embeddings_as_the_feature_space_of_the_automatic_mask(gan_pipe, tiny_sam):
    from PIL import Image

    from dragkit.parts.automask import sam_features

    wide = Image.new("RGB", (64, 32), "gray")
    assert sam_features(wide, tiny_sam).shape == (16, 8, 16)  # the padding's embedding rows are cut off
    face = gan_pipe.generate(27)
    req = DragRequest(face.image, [(32, 49)], [(32, 44)], seed=0)
    res = gan_pipe(
        req, code=face.code, progress=False, mask="auto", drag_steps=1, auto_mask_features="sam", sam_model=tiny_sam
    )
    assert res.info["auto_mask"]["features"] == "sam" and res.mask[49, 32] and res.mask[44, 32]
    assert 0 < res.info["auto_mask"]["fraction"] < 0.5


def test_a_missing_sam_model_is_one_clear_error(gan_pipe, tmp_path):
    from dragkit import ModelError

    face = gan_pipe.generate(27)
    with pytest.raises(ModelError, match="SAM model .*auto_mask_features=model"):
        gan_pipe(
            DragRequest(face.image, [(32, 49)], [(32, 44)]),
            code=face.code,
            progress=False,
            mask="auto",
            auto_mask_features="sam",
            sam_model=str(tmp_path / "no-such-sam"),
        )
