import pytest
import torch

from dragkit.core.geometry import GridMap, inside, patch_offsets, sample, window


def test_sampling_at_integer_positions_equals_slicing():
    torch.manual_seed(0)
    f = torch.randn(1, 5, 7, 9)
    rows, cols = torch.meshgrid(torch.arange(7.0), torch.arange(9.0), indexing="ij")
    rc = torch.stack([rows, cols], -1).reshape(-1, 2)
    got = sample(f, rc)
    assert torch.allclose(got, f[0].permute(1, 2, 0).reshape(-1, 5), atol=1e-6)
    # a patch at integer offsets around an integer centre is the slice of that window
    off = patch_offsets(2)
    patch = sample(f, torch.tensor([3.0, 4.0]) + off).reshape(5, 5, 5)
    assert torch.allclose(patch, f[0, :, 1:6, 2:7].permute(1, 2, 0), atol=1e-6)


def test_subpixel_sampling_is_bilinear_and_differentiable():
    f = torch.arange(12.0).reshape(1, 1, 3, 4).requires_grad_(True)
    v = sample(f, torch.tensor([[0.5, 1.25]]))
    # bilinear: rows 0/1 average, cols 1/2 at 0.25
    expected = 0.5 * ((1 * 0.75 + 2 * 0.25) + (5 * 0.75 + 6 * 0.25))
    assert v.item() == pytest.approx(expected)
    v.sum().backward()
    assert f.grad is not None and f.grad.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("convention", ["center", "corner"])
@pytest.mark.parametrize(("image", "grid"), [((512, 512), (64, 64)), ((480, 640), (240, 320)), ((64, 64), (64, 64))])
def test_coordinate_round_trip(convention, image, grid):
    gm = GridMap(image, grid, convention)
    xy = torch.tensor([[0.0, 0.0], [image[1] - 1.0, image[0] - 1.0], [123.4, 56.7]], dtype=torch.float64)
    assert torch.allclose(gm.to_image(gm.to_grid(xy)), xy, atol=1e-9)


def test_center_convention_maps_pixel_centres():
    gm = GridMap((512, 512), (256, 256))
    # the centre of image pixels 0 and 1 sits at the centre of grid pixel 0
    assert gm.to_grid([[0.5, 0.5]]).tolist() == [[0.0, 0.0]]
    assert GridMap((64, 64), (64, 64)).to_grid([[3.0, 7.0]]).tolist() == [[7.0, 3.0]]
    # (x, y) in, (row, col) out
    assert GridMap((100, 200), (100, 200), "corner").to_grid([[10.0, 20.0]]).tolist() == [[20.0, 10.0]]


def test_mask_resize_is_nearest():
    gm = GridMap((4, 4), (2, 2))
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert gm.resize_mask(m).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_patch_shapes():
    assert len(patch_offsets(1)) == 9
    assert len(patch_offsets(3, "disc")) == 29
    assert patch_offsets(0).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError):
        patch_offsets(1, "star")


def test_window_is_clipped_and_row_major():
    w = window(torch.tensor([0.2, 0.4]), 1, (5, 5))
    assert w.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert inside(w, (5, 5)).all()
    assert len(window(torch.tensor([2.0, 2.0]), 1, (5, 5))) == 9


def test_drag_region_is_the_union_of_capsules_around_the_segments():
    from dragkit.core.geometry import drag_region

    m = drag_region((64, 48), [((10, 20), (30, 20)), ((40, 40), (40, 40))], 3)
    assert m.shape == (64, 48) and m.dtype == bool
    assert m[20, 10] and m[20, 30] and m[23, 20] and not m[24, 20]  # along and around the first segment
    assert m[40, 40] and m[43, 40] and not m[40, 44]  # a zero-length pair is a disc
    assert not m[20, 34] and not m[0, 0]
