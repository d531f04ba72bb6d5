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
