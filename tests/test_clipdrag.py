"""CLIPDrag on the diffusion engine: CLIP guidance on an edit prompt (a tiny random CLIP built offline), fused
with the drag's gradient; the preset end to end."""

import itertools
import json

import numpy as np
import pytest
import torch

from dragkit import DragRequest, ParameterError
from dragkit.core.loop import FeatureOutput
from dragkit.engines import diffusion as D
from dragkit.parts.clip_guidance import ClipGuidanceTerm, load_clip
from dragkit.utils.testing import build_tiny_clip

from .helpers import dragkit, image

QUICK = dict(resize_width=0, lora="none", drag_steps=4, mutual_attn_start_layer=4, stop_distance=0)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


@pytest.mark.parametrize("form", ["plain", "directional"])
def test_the_clip_loss_reaches_the_latent_through_the_decoded_x0_prediction(pipe, tiny_clip, form):
    clip = load_clip(tiny_clip)
    src = torch.rand(1, 3, 64, 64)
    term = ClipGuidanceTerm.build(clip, "a smiling face", 300.0, form, src, "a face")
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[3]
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = D.unet_forward(pipe.unet, z, t, pipe.engine.cond(pipe.engine.encode_prompt("a face")), [2], need_eps=True)
    x0 = pipe.scheduler.step(out.eps, t, z, return_dict=False)[1]
    loss = term(FeatureOutput(out.features[2], x0_image=pipe.engine.decode(x0)), None)
    (grad,) = torch.autograd.grad(loss, z)
    assert 0 <= float(loss.detach()) <= 600 and grad.abs().sum() > 0 and torch.isfinite(grad).all()


@pytest.mark.slow
def test_an_edit_prompt_steers_the_edit_and_is_recorded(pipe, tiny_clip):
    req = DragRequest(image(64, 64), [(20, 30)], [(36, 30)], prompt="a photo", edit_prompt="a red square", seed=1)
    guided = pipe(req, method="clipdrag", progress=False, clip_model=tiny_clip, **QUICK)
    assert guided.edit_prompt == "a red square" and guided.info["clip"]["model"] == tiny_clip
    assert all("clip" in r["losses"] for r in guided.trajectory[:-1])
    rec = guided.to_dict()
    assert rec["edit_prompt"] == "a red square" and rec["params"]["fusion"] == "glms"
    plain = pipe(
        DragRequest(req.image, req.handles, req.targets, prompt="a photo", seed=1),
        method="clipdrag",
        progress=False,
        clip_model=tiny_clip,
        **QUICK,
    )
    assert not np.array_equal(np.asarray(guided.image), np.asarray(plain.image))  # the CLIP gradient acted


@pytest.mark.slow
def test_an_empty_edit_prompt_is_exactly_the_drag_alone(pipe, tiny_clip):
    """The authors' code skips the whole update when the edit prompt is empty; ours must equal the drag's."""
    base = dict(prompt="a photo", seed=3)
    img = image(64, 64)
    drag_only = pipe(
        DragRequest(img, [(20, 30)], [(36, 30)], **base), method="clipdrag", progress=False, fusion="none", **QUICK
    )
    for edit in ("", "   "):
        req = DragRequest(img, [(20, 30)], [(36, 30)], edit_prompt=edit, **base)
        res = pipe(req, method="clipdrag", progress=False, clip_model=tiny_clip, **QUICK)
        assert res.params["fusion"] == "glms" and "clip" not in res.info
        assert np.array_equal(np.asarray(res.image), np.asarray(drag_only.image))
        assert [r["handles"] for r in res.trajectory] == [r["handles"] for r in drag_only.trajectory]


def test_edit_prompts_are_a_diffusion_feature(gan_pipe):
    face = gan_pipe.generate(27)
    with pytest.raises(ParameterError, match="edit prompt 'smile'.*diffusion methods only"):
        gan_pipe(DragRequest(face.image, [(32, 49)], [(32, 44)], edit_prompt="smile"), code=face.code)


@pytest.mark.slow
@pytest.mark.subprocess
def test_clipdrag_end_to_end_from_the_cli(tiny_sd, tiny_clip, tmp_path, face_png):
    out = tmp_path / "c.png"
    args = ["edit", face_png, "--method", "clipdrag", "--model", tiny_sd, "--prompt", "a face", "-q"]
    args += ["--edit-prompt", "a smiling face", "--drag", "20,30:30,30", "-o", out, "--lora", "none"]
    args += ["--set", "drag_steps=3", "--set", f"clip_model={tiny_clip}", "--set", "mutual_attn_start_layer=4"]
    r = dragkit(*args, env_extra={"DRAGKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["method"] == "clipdrag" and rec["edit_prompt"] == "a smiling face"
    p = rec["params"]
    assert p["tracker"] == "fast" and p["supervision"] == "initial" and p["fusion"] == "glms"
    assert "clip" in rec["trajectory"][0]["losses"] and "clip_load" in rec["info"]["profile"]
    d = [s["distances"][0] for s in rec["trajectory"]]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(d))  # fast tracking never recedes


def test_a_missing_clip_model_is_one_clear_error(pipe, tmp_path):
    from dragkit import ModelError

    req = DragRequest(image(64, 64), [(20, 30)], [(36, 30)], edit_prompt="a red square")
    with pytest.raises(ModelError, match="CLIP model folder .* does not exist; point clip_model"):
        pipe(req, method="clipdrag", progress=False, clip_model=str(tmp_path / "no-clip"), **QUICK)
