"""dragkit's StyleGAN2 generator against what DragGAN's own code produced on the same random weights
(``tests/oracle/draggan/README.md`` says what was run and how)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dragkit.engines.gan.stylegan2 import generator_from_state

ORACLE = Path(__file__).parent / "oracle" / "draggan"
TOL = 1e-5


@pytest.fixture(scope="module")
def generator():
    return generator_from_state(
        json.loads((ORACLE / "init_kwargs.json").read_text()), load_file(ORACLE / "weights.safetensors")
    )


def case(name: str) -> tuple[dict, dict]:
    return json.loads((ORACLE / f"{name}.json").read_text()), load_file(ORACLE / f"{name}.safetensors")


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("name", ["nomask", "mask"])
def test_the_seed_gives_their_w_and_their_image(generator, name):
    meta, want = case(name)
    with torch.no_grad():
        ws = generator.mapping(generator.z_from_seed(meta["seed"]), truncation_psi=0.7)
        assert gap(ws, want["ws0"]) < TOL
        assert gap(generator.synthesis(want["ws0"], noise_mode="const"), want["image0"]) < TOL
        assert gap(generator.synthesis(want["ws_final"], noise_mode="const"), want["image_final"]) < TOL


def test_every_block_s_features_are_theirs(generator):
    _, want = case("nomask")
    with torch.no_grad():
        _, feats = generator.synthesis(want["ws0"], return_features=True)
    assert gap(feats[2], want["feature2"]) < TOL and gap(feats[5], want["feature5"]) < TOL
    assert feats[5].shape[-1] == 128  # DragGAN's feature_idx 5: the 128-px block


def test_the_negative_controls_fail(generator):
    """Each departure from their conventions is caught by the same tolerance, by orders of magnitude."""
    meta, want = case("nomask")
    with torch.no_grad():
        untruncated = generator.mapping(generator.z_from_seed(meta["seed"]), truncation_psi=1.0)
        other_seed = generator.mapping(generator.z_from_seed(meta["seed"] + 1), truncation_psi=0.7)
        g = torch.Generator().manual_seed(0)
        noisy = generator.synthesis(want["ws0"], noise_mode="random", generator=g)
    assert gap(untruncated, want["ws0"]) > 1e3 * TOL and gap(other_seed, want["ws0"]) > 1e3 * TOL
    assert gap(noisy, want["image0"]) > 1e3 * TOL


@pytest.fixture(scope="module")
def pipe():
    from dragkit.pipelines.gan import DragGANPipeline

    return DragGANPipeline.from_pretrained(ORACLE)  # the folder is a generator in dragkit's layout


def drag(pipe, name: str, **overrides):
    """dragkit's ``draggan`` on the oracle's case, as many steps as their loop was called: the tracked points per
    step ([row, col], as theirs) and the final w+."""
    import numpy as np
    from PIL import Image

    from dragkit import DragRequest

    meta, want = case(name)
    sample = pipe.generate(meta["seed"])
    mask = np.asarray(Image.open(ORACLE / "mask.png").convert("L")) > 127 if name == "mask" else None
    (r, c), (tr, tc) = meta["points"][0], meta["targets"][0]
    request = DragRequest(sample.image, handles=[(c, r)], targets=[(tc, tr)], mask=mask)
    events = []
    out = pipe(request, method="draggan", code=sample.code, drag_steps=len(meta["steps"]), progress=False,
               callback=events.append, **overrides)  # fmt: skip
    points = [[[round(v) for v in h] for h in e["handles"].tolist()] for e in events]
    code = pipe.engine.edit_code(sample.code, out.params).with_tensor(events[-1]["latent"])
    return points, pipe.engine.ws_of(code), pipe.engine.synthesize(code), meta, want


@pytest.mark.parametrize("name", ["nomask", "mask"])
def test_draggan_tracks_their_points_at_every_step_and_ends_on_their_image(pipe, name):
    """Their 60 calls of ``_render_drag_impl`` against dragkit's ``draggan`` run for 60 steps: the point each call
    tracked is the point dragkit tracks after as many optimizer steps, and the last w+ and image are theirs
    (measured: identical, 0.0)."""
    points, ws, image, meta, want = drag(pipe, name)
    assert points[: len(meta["steps"])] == [s["points"] for s in meta["steps"]]
    assert gap(ws, want["ws_final"]) < TOL and gap(image, want["image_final"]) < TOL
    if name == "nomask":
        assert len({tuple(p[0]) for p in points}) > 1  # the handle moved (back and forth): the tracking was exercised


@pytest.mark.slow
def test_draggan_departures_from_their_code_fail_the_oracle(pipe):
    """A wrong motion radius (r1 2 instead of 1 at 128 px), w instead of w+, the paper's L1 tracking, the paper's
    patch term, and (with the mask) λ 10 instead of their UI's 20: each fails it."""
    _, want = case("nomask")
    for overrides in ({"r_m": 2}, {"w_space": "w"}, {"tracker": "nearest"}, {"supervision": "patch"}):
        points, ws, *_ = drag(pipe, "nomask", **overrides)
        meta, _ = case("nomask")
        assert points[:60] != [s["points"] for s in meta["steps"]], overrides
        assert gap(ws, want["ws_final"]) > 1e3 * TOL, overrides
    _, ws, _, _, want_mask = drag(pipe, "mask", lam=10.0)
    assert gap(ws, want_mask["ws_final"]) > 1e2 * TOL
