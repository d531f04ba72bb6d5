"""FastDrag's one-step latent warp on synthetic latents, then the ``fastdrag`` preset and ``init=warp`` end to end on
the tiny models."""

import json

import numpy as np
import pytest
import torch

from dragkit import DragRequest, ParameterError
from dragkit.parts.warp import bnni, displacement, latent_region, latent_warp, repair_region

from .helpers import dragkit, image


def grid_latent(h=16, w=16, channels=4):
    """A latent whose every cell holds its own coordinates (channel 0: row, 1: col), so a moved cell says where it
    came from."""
    rr, cc = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    extra = [rr * 0 + k for k in range(channels - 2)]
    return torch.stack([rr, cc, *extra])[None]


def test_the_handle_moves_by_the_whole_drag_and_the_rim_stays():
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:12, 4:12] = True
    a, b = torch.tensor([[8.0, 6.0]]), torch.tensor([[8.0, 9.0]])  # 3 cells to the right
    cells = torch.nonzero(region).double()
    v = displacement(cells, a, b, region)
    at_handle = v[(cells == a.double()).all(-1)][0]
    assert at_handle.tolist() == pytest.approx([0.0, 3.0])  # the stretch is 1 at the handle
    assert float(v.norm(dim=-1).max()) <= 3.0 + 1e-9 and float(v[:, 0].abs().max()) < 1e-9  # along the drag only
    far = v[(cells == torch.tensor([4.0, 11.0], dtype=torch.float64)).all(-1)][0]
    assert float(far.norm()) < 1.5  # near the circle the stretch fades out


def test_the_warp_carries_content_along_the_drag_and_fills_the_emptied_place():
    z = grid_latent()
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:12, 4:12] = True
    a, b = torch.tensor([[8.0, 6.0]]), torch.tensor([[8.0, 9.0]])
    out = latent_warp(z, a, b, region)
    assert out[0, :2, 8, 9].tolist() == [8.0, 6.0]  # the target holds what was at the handle
    cells = torch.nonzero(region)
    dest = torch.round(cells + displacement(cells.double(), a, b, region)).long()
    outside = ~region
    outside[dest[:, 0], dest[:, 1]] = False  # destinations may leave the region
    assert torch.equal(out[0, :, outside], z[0, :, outside])  # the rest is untouched
    assert (~region)[dest[:, 0], dest[:, 1]].any()  # (and some do)
    assert out[0, :2, 8, 6].tolist() != [8.0, 6.0]  # the handle's own place no longer holds what moved away
    written = torch.zeros(16, 16, dtype=torch.bool)
    written[dest[:, 0], dest[:, 1]] = True
    emptied = region & ~written
    assert emptied.any() and torch.isfinite(out).all()
    r, c = torch.nonzero(emptied)[0].tolist()  # the first emptied place: BNNI from the four nearest known cells
    total, weight = torch.zeros(4), 0.0
    for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0)):
        rr, cc, k = r + dr, c + dc, 1
        while 0 <= rr < 16 and 0 <= cc < 16 and emptied[rr, cc]:
            rr, cc, k = rr + dr, cc + dc, k + 1
        if 0 <= rr < 16 and 0 <= cc < 16:
            total, weight = total + out[0, :, rr, cc] / k, weight + 1 / k
    assert torch.allclose(out[0, :, r, c], total / weight)
    for fill in ("zero", "original"):
        other = latent_warp(z, a, b, region, fill)
        assert torch.equal(other[0, :2, 8, 9], out[0, :2, 8, 9])  # the same relocation, another fill


def test_the_backward_warp_samples_every_reached_place_from_where_the_warp_came_from():
    z = grid_latent()
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:12, 4:12] = True
    a, b = torch.tensor([[8.0, 6.0]]), torch.tensor([[8.0, 9.0]])
    out = latent_warp(z, a, b, region, sample="backward")
    assert out[0, :2, 8, 9].tolist() == pytest.approx([8.0, 6.0], abs=0.25)  # the target holds the handle's content
    moved = (out[0, :2] - z[0, :2]).abs().sum(0) > 1e-6
    assert moved[region].any() and torch.isfinite(out).all()
    assert torch.equal(out[0, :, ~region & ~moved], z[0, :, ~region & ~moved])
    # each changed place took its content from up the drag (the same row, a column to its left), never from below it
    rows, cols = torch.nonzero(moved & region, as_tuple=True)
    came = out[0, :2, rows, cols]
    assert (came[0] - rows).abs().max() < 0.5 and bool((came[1] <= cols + 1e-6).all())
    # no blocks: along the drag's row the content advances at every place, stretched behind the handle and squeezed
    # ahead of it, never repeating a place's content
    step = out[0, 1, 8, 4:12].diff()
    assert float(step.min()) > 0.2 and float(step.max()) < 2.0
    with pytest.raises(ValueError, match="warp_sample='nearest'"):
        latent_warp(z, a, b, region, sample="nearest")


def test_the_repair_region_is_the_grown_region_less_the_moved_content():
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    where = repair_region(mask, torch.tensor([[16.0, 16.0]]), (32, 32), (16, 16), keep=4.0, band=1)
    assert where.shape == (16, 16) and where[8, 8] == 0  # the target's disc is kept as the warp left it
    assert where[3, 8] == 1 and where[2, 8] == 0  # one cell beyond the region's edge (rows 4..11), not two
    assert where[4, 4] == 1 and where.sum() < 100


def test_bnni_interpolates_from_the_four_nearest_known_cells():
    z = torch.zeros(1, 1, 5, 5)
    z[0, 0, 2, 0], z[0, 0, 2, 4], z[0, 0, 0, 2], z[0, 0, 4, 2] = 1.0, 3.0, 5.0, 7.0
    empty = torch.zeros(5, 5, dtype=torch.bool)
    empty[1:4, 1:4] = True
    out = bnni(z.clone(), empty)
    # (2, 1) is filled before (2, 2) and counts as known then; (1, 1) sees (1, 0) and (0, 1), both 0, at distance 1
    assert float(out[0, 0, 1, 1]) == pytest.approx(0.0)
    left, up = float(out[0, 0, 2, 1]), float(out[0, 0, 1, 2])
    # the centre: left (2, 1) and up (1, 2) filled already at distance 1, right (2, 4) and down (4, 2) at distance 2
    expected = (left + up + 3.0 / 2 + 7.0 / 2) / (1 + 1 + 0.5 + 0.5)
    assert float(out[0, 0, 2, 2]) == pytest.approx(expected)


def test_the_editable_region_reaches_every_latent_cell_it_overlaps():
    mask = torch.zeros(32, 32)
    mask[9, 9] = 1  # one grid pixel
    assert torch.nonzero(latent_region(mask, (8, 8))).tolist() == [[2, 2]]  # the cell covering it, at 1/4
    assert latent_region(mask, (64, 64)).sum() == 4  # upsampled: the 2x2 cells it covers


SD = dict(resize_width=0, mutual_attn_start_layer=4)


def masked_request(**kw):
    m = np.zeros((80, 96), bool)
    m[16:64, 24:88] = True
    return DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo", mask=m, seed=3, **kw)


def test_fastdrag_warps_and_samples_without_optimizing_and_reuses_the_inversion(pipe):
    pipe.clear_source_cache()
    steps = []
    out = pipe(masked_request(), method="fastdrag", progress=False, callback=steps.append, **SD)
    assert out.params["sampler"] == "warp" and out.params["lora"] == "none" and out.params["inference_steps"] == 10
    assert steps == [] and out.info["steps"] == 0 and out.info["stop_reason"] == "warp"
    assert out.info["handles_tracked"] is False and out.handles == [(56.0, 40.0)]  # the warp put the handle there
    assert out.info["warp"]["region_cells"] > 0 and "warp" in out.info["profile"] and "drag" not in out.info["profile"]
    again = pipe(masked_request(), method="fastdrag", progress=False, **SD)
    assert again.info["source_cache"] == "hit" and again.image.tobytes() == out.image.tobytes()
    plain = pipe(masked_request(), method="fastdrag", progress=False, source_kv="recompute", source_cache=False, **SD)
    assert plain.image.tobytes() != out.image.tobytes()  # the inversion's keys and values act
    with pytest.raises(ParameterError, match="init=warp .* paint a mask, or use mask=auto"):
        pipe(DragRequest(image(), [(40, 40)], [(56, 40)]), method="fastdrag", progress=False, mask="none", **SD)


def test_the_repair_regenerates_the_region_and_keeps_the_warped_latent_elsewhere(pipe, monkeypatch):
    from dragkit.methods.drivers import warp as drivers  # where warp_then_sample looks them up

    seen = {}

    def warped(edit):
        seen["warped"] = out = real_warped(edit)
        return out

    def sample(edit, z, guides, reports):
        seen["sampled_from"] = z
        return real_sample(edit, z, guides, reports)

    real_warped, real_sample = drivers.warped, drivers.sample
    monkeypatch.setattr(drivers, "warped", warped)
    monkeypatch.setattr(drivers, "sample", sample)
    pipe.clear_source_cache()
    kw = dict(SD, warp_sample="backward", inversion_strength=0.1)
    out = pipe(masked_request(), method="fastdrag", progress=False, repair_strength=0.5, **kw)
    assert out.info["repair"]["steps"] == 4 and "repair" in out.info["profile"]
    zw, z = seen["warped"][0], seen["sampled_from"]
    kept = torch.isclose(z, zw, atol=1e-5).all(1)[0]  # (h, w): the places the repair left as the warp did
    assert 0 < out.info["repair"]["region_cells"] == int((~kept).sum())  # it changed exactly its region
    (r, c), (lh, lw) = (40 * zw.shape[-2] // 80, 56 * zw.shape[-1] // 96), zw.shape[-2:]
    assert kept[r, c] and kept[0, 0] and not kept[lh // 2, (24 + 8) * lw // 96]  # target and outside kept
    plain = pipe(masked_request(), method="fastdrag", progress=False, **kw)
    assert "repair" not in plain.info and plain.info["warp"]["sample"] == "backward"
    with pytest.raises(ParameterError, match="only the warp sampler repairs"):
        pipe(masked_request(), method="dragdiffusion", progress=False, repair_strength=0.5, **kw)
    with pytest.raises(ParameterError, match="repair_strength=0.1 must re-noise more than inversion_strength=0.1"):
        pipe(masked_request(), method="fastdrag", progress=False, repair_strength=0.1, **kw)


def test_init_warp_starts_an_optimizing_method_from_the_warped_latent(pipe):
    pipe.clear_source_cache()
    fast = dict(SD, lora="none", drag_steps=5)
    warped = pipe(masked_request(), progress=False, init="warp", **fast)
    plain = pipe(masked_request(), progress=False, **fast)
    # the loop starts where the warp left the handle (on its target) and tracks it there first: within the
    # tracker's window (r_p 3 grid px = 6 image px) of the target, not back at the handle's old place
    ((x, y),) = warped.trajectory[0]["handles"]
    assert abs(x - 56) <= 6 and y == 40 and plain.trajectory[0]["handles"] == [[40.0, 40.0]]
    assert warped.image.tobytes() != plain.image.tobytes()


@pytest.mark.slow
def test_init_warp_also_starts_the_alternating_and_the_guided_samplers(pipe):
    pipe.clear_source_cache()
    fast = dict(SD, lora="none")
    kw = dict(drag_steps=3, drag_phases=2, r_p=3, **fast)  # r_p 3: a window of 6 image px around the warped handle
    alt = pipe(masked_request(), method="gooddrag", progress=False, init="warp", **kw)
    ((x, y),) = alt.trajectory[0]["handles"]  # the first phase tracks from where the warp put the handle
    assert abs(x - 56) <= 6 and y == 40
    guided, plain = (
        pipe(masked_request(), method="luciddrag", progress=False, guide_quality=0, init=init, **fast)
        for init in ("warp", "inverted")
    )
    assert guided.params["init"] == "warp" and guided.image.tobytes() != plain.image.tobytes()


@pytest.mark.slow
@pytest.mark.subprocess
def test_fastdrag_from_the_cli_with_the_automatic_mask(tiny_sd, tmp_path, face_png):
    out = tmp_path / "f.png"
    args = ["edit", face_png, "--method", "fastdrag", "--model", tiny_sd, "--drag", "20,30:28,30", "-o", out, "-q"]
    r = dragkit(*args, "--set", "mutual_attn_start_layer=4", "--set", "resize_width=0")
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["method"] == "fastdrag" and rec["info"]["stop_reason"] == "warp" and "auto_mask" in rec["info"]
    assert (tmp_path / "f.mask.png").exists()


def test_init_warp_on_a_gan_moves_the_content_of_its_spatial_code(gan_pipe):
    from dragkit.bench.metrics import AlexFeatures, mean_distance
    from dragkit.core.geometry import drag_region

    face = gan_pipe.generate(27)
    h, t = (32.0, 49.0), (32.0, 44.0)
    req = DragRequest(face.image, [h], [t], mask=drag_region((64, 64), [(h, t)], 8.0), seed=27)
    out = gan_pipe(req, code=face.code, progress=False, init="warp", latent_block=3, drag_steps=20)
    assert out.info["warp"]["code_shape"] == [128, 16, 16] and "warp" in out.info["profile"]
    ((x, y),) = out.trajectory[0]["handles"]  # the loop starts with the handle where the warp put it
    assert x == 32 and abs(y - 44) <= 1
    ex = AlexFeatures()
    before = mean_distance(face.image, face.image, [h], [t], ex).mean
    assert mean_distance(face.image, out.image, [h], [t], ex).mean < 0.5 * before  # judged independently
    with pytest.raises(ParameterError, match="init=warp moves the editable region's content: paint a mask"):
        gan_pipe(DragRequest(face.image, [h], [t]), code=face.code, progress=False, init="warp", mask="none")
    with pytest.raises(ParameterError, match="init=warp needs a spatial code: latent_block=0"):
        gan_pipe(req, code=face.code, progress=False, init="warp", latent_block=0)


def capsule(h=24, w=24, a=(12.0, 6.0), b=(12.0, 14.0), radius=4.0):
    """A region like the evaluations' masks: the cells within ``radius`` of the a→b segment, (row, col)."""
    rr, cc = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    p, a_, d = torch.stack([rr, cc], -1), torch.tensor(a, dtype=torch.float64), torch.tensor(b) - torch.tensor(a)
    t = (((p - a_) * d).sum(-1) / (d * d).sum()).clamp(0, 1)
    return (p - a_ - t[..., None] * d).norm(dim=-1) <= radius


def test_the_slide_moves_the_region_rigidly_and_takes_what_lay_behind_the_handle():
    from dragkit.parts.warp import slid_handles, slide_warp

    z = grid_latent(24, 24)
    region = capsule()
    a, b = torch.tensor([[12.0, 6.0]]), torch.tensor([[12.0, 14.0]])  # 8 cells to the right
    out = slide_warp(z, a, b, region, band=0.0, sample="backward")
    assert out[0, :2, 12, 14].tolist() == [12.0, 6.0]  # the target holds what was at the handle: no stretch there
    assert out[0, :2, 12, 6].tolist() == [12.0, 0.0]  # the handle's place: from 8 cells behind it (the image's edge)
    rows, cols = torch.nonzero(region, as_tuple=True)
    came_from = out[0, :2, rows, cols] - torch.stack([rows, cols]).float()
    assert torch.all(came_from[0] == 0) and torch.all((came_from[1] == -8) | (cols < 8))  # all by the whole drag
    assert torch.equal(out[0, :, ~region], z[0, :, ~region])  # outside the region nothing changes
    assert slid_handles(a, b, region, 0.0)[0].tolist() == pytest.approx([12.0, 14.0])


def test_the_slides_band_shears_only_near_the_edge():
    from dragkit.parts.warp import slide_field

    region = capsule()
    a, b = torch.tensor([[12.0, 6.0]]), torch.tensor([[12.0, 14.0]])
    u = slide_field(a, b, region, band=2.0)
    assert u[12, 10].tolist() == pytest.approx([0.0, 8.0])  # deep inside: the whole drag
    outside = torch.nn.functional.pad(~region, (1, 1, 1, 1), value=False)
    edge = region & (outside[:-2, 1:-1] | outside[2:, 1:-1] | outside[1:-1, :-2] | outside[1:-1, 2:])
    assert edge.any() and float(u[edge].norm(dim=-1).max()) <= 0.25 * 8.0 + 1e-9  # on the edge: a quarter at most
    assert torch.equal(u[~region], torch.zeros_like(u[~region]))


@pytest.mark.slow
def test_warp_field_slide_in_a_preset_moves_the_handle_to_its_target(pipe):
    pipe.clear_source_cache()
    out = pipe(masked_request(), method="fastdrag", progress=False, warp_field="slide", **SD)
    assert out.info["warp"]["field"] == "slide"
    ((x, y),) = out.handles
    assert abs(x - 56) <= 1 and abs(y - 40) <= 1
