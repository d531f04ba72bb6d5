"""dragkit's ``fastdrag`` against the official FastDrag code (XuanjiaZ/FastDrag at ``def3c4e``, ``run_drag`` as their
DragBench script calls it, run unchanged on CPU in float32, the same tiny model as their "LCM" UNet): what it computed
on the small random SD 1.5-layout model of the DragDiffusion oracle is kept in ``tests/oracle/fastdrag/`` (its README
says how). The warp is pure geometry on the latent: ours must give their warped latent to the inversion's float
noise, then the same sampled latent and image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest

from .conftest import SHARED_ORACLE as SHARED
from .conftest import shared_oracle_pipe

pytest.importorskip("diffusers")

ORACLE = Path(__file__).parent / "oracle" / "fastdrag"
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared model is not at {SHARED}"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def pipe():
    return shared_oracle_pipe()


def run(pipe, name: str, **overrides) -> dict:
    """Our ``fastdrag`` on the case (the preset's numbers are their script's: 10 steps, inversion 0.7, their mask):
    the inverted and warped latents, the latent the VAE decodes, the image."""
    from safetensors.torch import load_file

    import dragkit.methods.drivers.warp as driver

    meta = json.loads((ORACLE / f"{name}.json").read_text())
    points = meta["inputs"]["points_xy_image_px"]  # [x, y]: handle, target, ...
    image = Image.open(SHARED / "image.png").convert("RGB")
    mask = np.asarray(Image.open(SHARED / "mask.png").convert("L")) > 127
    request = DragRequest(image, points[0::2], points[1::2], mask=mask, prompt=meta["inputs"]["prompt"], seed=42)
    got: dict = {"want": load_file(str(ORACLE / f"{name}.safetensors"))}
    warped = driver.warped

    def keep_warp(edit):
        got["inverted"] = edit.latent.detach().clone()
        z, moved = warped(edit)
        got["warped"] = z.detach().clone()
        return z, moved

    vae = pipe.vae
    decode = vae.decode

    def keep_decoded(z, *args, **kwargs):
        got["decoded"] = z.detach().clone() * vae.config.scaling_factor
        return decode(z, *args, **kwargs)

    driver.warped, vae.decode = keep_warp, keep_decoded
    try:
        got["result"] = pipe(request, method="fastdrag", resize_width=0, progress=False, **overrides)
    finally:
        driver.warped, vae.decode = warped, decode
    return got


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("name", ["mask", "mask_long"])
def test_fastdrag_warps_and_samples_as_their_code(pipe, name):
    got = run(pipe, name)
    want = got["want"]
    assert gap(got["inverted"], want["inverted_latent"]) < 1e-4  # measured 4.8e-6
    assert gap(got["warped"], want["warped_latent"]) < 1e-4  # measured 4.8e-6: every cell where theirs put it
    changed = (got["warped"] - got["inverted"]).abs().amax(1)[0] > 0
    assert torch.equal(changed, want["warp_changed_mask"][0, 0] > 0)  # 22 cells; 70 on the long drag
    assert gap(got["decoded"][-1:], want["final_latents"][1:]) < 2e-3  # measured 4.0e-5
    ours = np.asarray(got["result"].image, float)
    theirs = np.asarray(Image.open(ORACLE / f"{name}.png").convert("RGB"), float)
    assert np.abs(ours - theirs).max() <= 4 and np.abs(ours - theirs).mean() < 0.2  # measured 1 / 0.001


def test_the_region_rule_is_what_parts_the_warps(pipe):
    """dragkit's own rule for the latent region (any cell the mask touches: 91 cells against their 84) moves other
    cells: the oracle catches it, as it catches a warp sampled backward."""
    for overrides in ({"warp_region": "any"}, {"warp_sample": "backward"}):
        got = run(pipe, "mask", **overrides)
        assert gap(got["warped"], got["want"]["warped_latent"]) > 0.1, overrides
