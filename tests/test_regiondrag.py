"""RegionDrag's parts alone (dragkit/parts/region.py) and the ``regiondrag`` preset's errors on the tiny model; its
numbers against the authors' code are in tests/test_oracle_regiondrag.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest, ParameterError
from dragkit.parts.region import (
    copy_paste,
    handle_noise,
    idw,
    point_cells,
    region_cells,
    sde_down,
    sde_noise,
    sde_up,
)


def test_points_fall_in_the_cell_under_them():
    cells = point_cells([(94, 57), (0, 0), (127, 127)], (16 / 128, 16 / 128), (16, 16))
    assert cells.tolist() == [[11, 7], [0, 0], [15, 15]]


def test_the_sde_step_undoes_the_inversion_step_it_kept_the_noise_of():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    a_from, a_to = torch.tensor(0.7), torch.tensor(0.5)
    up = sde_up(x, a_from, a_to, torch.randn(1, 4, 8, 8, generator=g))
    noise = sde_noise(x, up, eps, a_from, a_to)
    assert torch.allclose(sde_down(up, eps, a_to, a_from, noise), x, atol=1e-5)


def test_handle_noise_and_copy_paste_touch_only_their_cells_and_the_last_repeat_wins():
    z = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    cells = torch.tensor([[1, 2], [3, 0], [1, 2]])  # (x, y); the first cell twice
    noise = torch.tensor([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    out = handle_noise(z, cells, 1.0, noise)  # s >= 1: pure noise
    assert out[0, :, 2, 1].tolist() == [30.0, 60.0] and out[0, :, 0, 3].tolist() == [20.0, 50.0]
    changed = (out != z).any(1)[0]
    assert changed.sum() == 2
    assert torch.allclose(handle_noise(z, cells, 0.6, noise)[0, :, 0, 3], 0.8 * z[0, :, 0, 3] + 0.6 * noise[:, 1])
    known = -z
    pasted = copy_paste(z, known, torch.tensor([[0, 0], [1, 1]]), torch.tensor([[2, 3], [2, 3]]))
    assert pasted[0, :, 3, 2].tolist() == known[0, :, 1, 1].tolist()
    assert (pasted != z).any(1)[0].sum() == 1


def test_idw_moves_by_the_nearest_drags():
    refs, moves = np.array([[0, 0], [10, 0]], np.int32), np.array([[2, 0], [0, 4]], np.int32)
    assert idw(np.array([[0, 0], [10, 0]], np.int32), refs, moves).tolist() == [[2, 0], [10, 4]]
    assert idw(np.array([[5, 5]], np.int32), refs[:1], moves[:1]).tolist() == [[7, 5]]  # one reference: its move


def test_a_painted_region_moves_with_its_handle():
    pytest.importorskip("cv2")
    mask = np.zeros((64, 64), bool)
    mask[16:32, 16:32] = True  # latent cells 2-3 of an 8x8 grid
    source, target = region_cells(mask, torch.tensor([[2, 2]]), torch.tensor([[4, 2]]), (8, 8))
    assert len(source) == len(target) > 0
    assert ((target - source) == torch.tensor([2, 0])).all()
    none = region_cells(mask, torch.tensor([[6, 6]]), torch.tensor([[7, 6]]), (8, 8))
    assert len(none[0]) == 0


@pytest.fixture
def request_64():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return image


@pytest.mark.parametrize(
    ("overrides", "masked", "message"),
    [
        ({"inversion_strength": 1.0}, False, "inversion_strength=1.0 inverts 20 of inference_steps=20"),
        ({"region_from": "mask"}, False, "region_from=mask moves the painted region: paint a mask"),
        ({"region_blend": "mask"}, False, "region_blend=mask keeps the inversion outside the painted mask"),
        ({}, True, "no handle lies inside the painted region"),
    ],
)
def test_bad_settings_are_one_line_errors(pipe, request_64, overrides, masked, message):
    mask = None
    if masked:
        mask = np.zeros((64, 64), bool)
        mask[40:, 40:] = True  # away from the handle
    req = DragRequest(request_64, [(10, 10)], [(20, 10)], mask=mask, prompt="x")
    with pytest.raises(ParameterError, match=message):
        pipe(req, method="regiondrag", progress=False, resize_width=0, **overrides)


def test_regiondrag_runs_and_reports_its_pass(pipe, request_64):
    req = DragRequest(request_64, [(10, 10)], [(20, 10)], prompt="x")
    out = pipe(req, method="regiondrag", progress=False, resize_width=0)
    facts = out.info["region"]
    assert facts["from"] == "points" and facts["pairs"] == 1 and facts["copied_steps"] == 10
    assert len(facts["timesteps"]) == 10 and out.info["drag_timestep"] == facts["timesteps"][0]
    assert out.image.size == (64, 64)
