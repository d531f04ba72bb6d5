"""dragkit's ``dragnoise`` against DragNoise's own code (haofengl/DragNoise at ``1072731``, its DragBench script
``run_drag``, LoRA off, run unchanged on CPU in float32): what it computed on the DragDiffusion oracle's tiny
random-weight SD 1.5-layout model is kept in ``tests/oracle/dragnoise/`` (its README says how it was made). The
same inputs through our pipeline must give the same handles at every tracking, the same optimized bottleneck, the
same latents up to float noise and the same image within a level or two; a changed parameter must not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragkit import DragRequest

from .conftest import SHARED_ORACLE, shared_oracle_pipe, vae_inputs

pytest.importorskip("diffusers")

FIXTURE = Path(__file__).parent / "oracle" / "dragnoise"
pytestmark = [
    pytest.mark.skipif(not SHARED_ORACLE.is_dir(), reason=f"the shared oracle model is not at {SHARED_ORACLE}"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def oracle_pipe():
    return shared_oracle_pipe()


def run(pipe, name: str, **changed):
    """Their case through ``dragnoise``: every step's handles, the bottleneck after the drag, the latent entering
    the VAE and the image."""
    case = json.loads((FIXTURE / f"{name}.json").read_text())
    args = case["args_seen_by_drag_diffusion_update"]
    image = Image.open(SHARED_ORACLE / "image.png").convert("RGB")
    mask = None
    if case["inputs"]["mask"].startswith("mask.png"):
        mask = np.asarray(Image.open(SHARED_ORACLE / "mask.png").convert("L")) > 127
    points = case["inputs"]["points_xy"]
    request = DragRequest(image, points[0::2], points[1::2], mask=mask, prompt=args["prompt"], seed=42)
    settings = dict(
        lora="none",
        resize_width=0,
        feature_block=args["unet_feature_idx"][0] - 1,  # their index 0 is the mid block's output
        drag_steps=args["n_pix_step"],
        inference_steps=args["n_inference_step"],
        inversion_strength=0.7,
        lam=args["lam"],
        latent_lr=args["lr"],
        r_m=args["r_m"],
        r_p=args["r_p"],
        propagate_end=args["end_step"],
    )
    steps: list[dict] = []
    with vae_inputs(pipe.vae) as decoded:
        pipe.clear_source_cache()
        result = pipe(
            request,
            method="dragnoise",
            progress=False,
            callback=lambda ev: steps.append({"handles": ev["handles"].tolist(), "h": ev["latent"].clone()}),
            **{**settings, **changed},
        )
    return case, steps, decoded[-1], result


def compare(name, case, steps, final, result):
    from safetensors.torch import load_file

    tensors = load_file(str(FIXTURE / f"{name}.safetensors"))
    theirs = case["steps"]  # one record per drag iteration: tracked (None at 0), loss_total, update_applied
    n = len(theirs)
    same = sum(steps[k]["handles"] == theirs[k]["tracked"] for k in range(1, n))
    h = float((steps[-1]["h"] - tensors["bottleneck_optimised"]).abs().max())
    z = float((final - tensors["final_latents"][1:]).abs().max())
    img = np.abs(
        np.asarray(result.image, np.int16) - np.asarray(Image.open(FIXTURE / f"{name}.png").convert("RGB"), np.int16)
    )
    return same, n - 1, h, z, int(img.max()), float(img.mean())


# Measured (tests/oracle/dragnoise/README.md, "Tolerance"): the starting bottleneck differs from theirs by 2.5e-5
# (diffusers 0.17 against ours); the mask term's gradient is a sign and Adam's first steps are nearly signs, so over 80
# updates that noise grows: with the mask (the term pins most of the latent) the bottleneck ends 2.7e-4 from theirs on
# this machine and 4.7e-3 on CI's (another CPU rounds differently), the image within 1 level here; the long drag
# without one ends 0.037 away (values up to 2), its image within 8 levels (mean 0.33), one of its 79 trackings a grid
# pixel off late in the drag. The negative control is 55/79, 1.15, 230.
@pytest.mark.parametrize(
    "name, equal, h_tol, z_tol, img_tol",
    [("mask", 78, 0.02, 0.01, (6, 0.15)), ("nomask_long", 78, 0.06, 0.02, (10, 0.5))],
)
def test_dragnoise_reproduces_their_code(oracle_pipe, name, equal, h_tol, z_tol, img_tol):
    case, steps, final, result = run(oracle_pipe, name)
    assert result.info["drag_timestep"] == case["drag_timestep"]
    assert steps[0]["handles"] == case["handles_initial"]
    assert result.info["bottleneck"] == {"shape": [1, 32, 2, 2], "substituted_steps": 35}
    losses = [sum(r["losses"].values()) for r in result.trajectory[: len(case["steps"])]]
    assert losses[:20] == pytest.approx([s["loss_total"] for s in case["steps"][:20]], abs=1e-3)
    same, total, h, z, img_max, img_mean = compare(name, case, steps, final, result)
    assert same >= equal, f"tracked handles equal at {same}/{total} steps"
    assert h < h_tol, h  # the optimized bottleneck (values up to 2)
    assert z < z_tol, z  # the latent entering the VAE (their batch is [source, edited], both equal)
    assert img_max <= img_tol[0] and img_mean < img_tol[1], (img_max, img_mean)


def test_a_changed_parameter_departs_from_their_code(oracle_pipe):
    """Negative control: lam 0.1 instead of their 0.2 tracks differently and ends on another bottleneck and image."""
    case, steps, final, result = run(oracle_pipe, "mask", lam=0.1)
    same, total, h, _, img_max, _ = compare("mask", case, steps, final, result)
    assert same < total and h > 0.1 and img_max > 20, (same, h, img_max)
