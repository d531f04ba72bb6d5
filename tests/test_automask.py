"""AdaptiveDrag's automatic mask: feature-space superpixels and the editable region they give each handle."""

import json

import numpy as np
import pytest
import torch

from dragkit import DragRequest
from dragkit.parts.automask import auto_mask, feature_superpixels, handle_region

from .test_cli import dragkit

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


def test_cli_mask_auto_writes_the_mask_beside_the_result(tmp_path, face_png):
    out = tmp_path / "o.png"
    r = dragkit("edit", face_png, "--drag", "32,49:32,44", "--mask", "auto", "-o", out, "--set", "drag_steps=2", "-q")
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
