"""dragkit's ``adaptivedrag`` against AdaptiveDrag's own code, a PARTIAL oracle (Calvin11311/AdaptiveDrag at
``5b4c9d5``, its UI's ``run_drag`` on CPU in float32 with SAM2 replaced by a stand-in returning ``mask.png``: there are
no SAM weights here). What was run and every switch: ``tests/oracle/adaptivedrag/README.md``.

The drag itself departs from theirs at the first tracking, by design and by their code's bugs (the README's "dragkit
against these files" lists eleven differences: superpixels on SAM's drawing rather than on the UNet's features, radii
measured in image pixels but applied on the grid, an adaptive step rule and a CLoss that have no effect, no
backtracking, ...), so only what both share is compared: the inversion to AdaptiveDrag's strength 0.8 (t = 781), and
the sampling with mutual self-attention from their dragged latent, which must give their edited latent and image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest

from .conftest import SHARED_ORACLE, shared_oracle_pipe, vae_inputs

pytest.importorskip("diffusers")

FIXTURE = Path(__file__).parent / "oracle" / "adaptivedrag"
pytestmark = [
    pytest.mark.skipif(not SHARED_ORACLE.is_dir(), reason=f"the shared oracle model is not at {SHARED_ORACLE}"),
    pytest.mark.slow,
]
POINTS = {
    "sam_mask": [[94, 57], [97, 46], [84, 48], [86, 43]],
    "sam_mask_long": [[94, 57], [100, 35], [84, 48], [88, 38]],
}
# their UI's numbers; CLoss off: theirs updates a tensor their sampler never reads (README)
SETTINGS = dict(lora="none", resize_width=0, inversion_strength=0.8, mutual_attn_start_layer=10, closs_weight=0.0)


@pytest.fixture(scope="module")
def oracle_pipe():
    return shared_oracle_pipe()


def tensors(case: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / case / "tensors.safetensors"))


def run(pipe, monkeypatch, case: str, dragged: torch.Tensor | None = None, **changed):
    """The case through ``adaptivedrag``; with ``dragged``, the drag's result replaced by it (their dragged latent),
    so that what follows is sampling alone. Returns the inverted latent, the latent entering the VAE, the result."""
    from dragkit.methods.drivers import optimize

    image = Image.open(SHARED_ORACLE / "image.png").convert("RGB")
    mask = np.asarray(Image.open(SHARED_ORACLE / "mask.png").convert("L")) > 0
    points = POINTS[case]
    request = DragRequest(image, points[0::2], points[1::2], mask=mask, prompt="a photo of a dog and a cat", seed=42)
    inverted = []
    engine = pipe.engine
    invert, drag = engine.invert, optimize.drag

    def keep_inverted(*a, **kw):
        inverted.append(invert(*a, **kw))
        return inverted[-1]

    def theirs(edit):
        out = drag(edit)
        out.latent = dragged.to(out.latent)
        return out

    monkeypatch.setattr(engine, "invert", keep_inverted)
    if dragged is not None:
        monkeypatch.setattr(optimize, "drag", theirs)
    pipe.clear_source_cache()
    with vae_inputs(pipe.vae) as decoded:
        result = pipe(request, method="adaptivedrag", progress=False, **{**SETTINGS, **changed})
    return inverted[0], decoded[-1], result


def test_their_run_is_what_the_readme_says():
    for case, updates in (("sam_mask", 4), ("sam_mask_long", 41)):
        record = json.loads((FIXTURE / case / "result.json").read_text())
        assert record["derived"]["drag_t"] == 781
        assert tensors(case)["dragged_latents_per_update"].shape[0] == updates


# Measured (README): our inverted latent is 1.8e-5 from theirs (diffusers 0.24 against ours); their dragged latent
# through our sampling gives their edited latent within 1e-5 and their image within 1 level. The margins below are
# for another CPU's rounding; the drag's own departure (their images 25-39 levels away on average) is far outside them.
@pytest.mark.parametrize("case", ["sam_mask", "sam_mask_long"])
def test_inversion_and_sampling_are_theirs(oracle_pipe, monkeypatch, case):
    theirs = tensors(case)
    inverted, final, result = run(oracle_pipe, monkeypatch, case, dragged=theirs["dragged_latent"])
    assert result.info["drag_timestep"] == 781
    assert float((inverted.float() - theirs["inverted_latent"]).abs().max()) < 2e-4
    assert float((final.float() - theirs["final_latents"][1:]).abs().max()) < 2e-4
    img = np.abs(np.asarray(result.image, np.int16) - np.asarray(Image.open(FIXTURE / case / "image.png"), np.int16))
    assert img.max() <= 3 and img.mean() < 0.05, (img.max(), img.mean())


def test_a_changed_parameter_departs_from_their_sampling(oracle_pipe, monkeypatch):
    """Negative control: mutual self-attention from layer 12 instead of their 10 samples another edit."""
    theirs = tensors("sam_mask")
    _, final, _ = run(
        oracle_pipe, monkeypatch, "sam_mask", dragged=theirs["dragged_latent"], mutual_attn_start_layer=12
    )
    assert float((final.float() - theirs["final_latents"][1:]).abs().max()) > 0.05
