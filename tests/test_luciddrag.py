"""LucidDrag end to end on the tiny models: no drag loop, guided sampling, the intention recorded."""

import json

import pytest

from dragkit import DragRequest
from dragkit.parts.intentions import Intention

from .helpers import GOOD, Endpoint, dragkit, image


def lucid(pipe):
    """LucidDrag's pipeline over the same components (diffusers' ``from_pipe``)."""
    from dragkit.pipelines.diffusion import LucidDragPipeline

    return LucidDragPipeline.from_pipe(pipe)


QUICK = dict(resize_width=0, lora="none", mutual_attn_start_layer=4, discriminator_steps=20, inference_steps=10)


@pytest.mark.slow
def test_luciddrag_guides_the_sampling_and_records_its_intention(pipe):
    req = DragRequest(image(64, 64), [(20, 30), (40, 30)], [(14, 30), (46, 30)], prompt="a photo of a cat", seed=2)
    res = pipe(req, method="luciddrag", progress=False, **QUICK)
    assert res.params["sampler"] == "guidance" and res.info["stop_reason"] == "guidance" and res.trajectory == []
    assert res.info["intention"]["kind"] == "enlarge"
    assert res.info["intention"]["target_prompt"] == "a photo of a cat, with a larger object"
    steps = res.info["guidance"]
    assert len(steps) == 7 and {"edit", "quality"} <= set(steps[0])  # 10 steps, 0.7 of them sampled
    assert "discriminator" in res.info["profile"] and "drag" not in res.info["profile"]
    assert res.info["handles_tracked"] is False
    mine = Intention("the cat", "a photo of a cat", "a photo of a fat cat", 0.9)
    other = lucid(pipe)(req, progress=False, intention=mine, **QUICK)
    assert other.info["intention"]["target_prompt"] == "a photo of a fat cat"
    assert other.image.tobytes() != res.image.tobytes()  # the semantic direction acted


@pytest.mark.slow
@pytest.mark.subprocess
def test_luciddrag_from_the_cli(tiny_sd, tmp_path, face_png):
    out = tmp_path / "l.png"
    args = ["edit", face_png, "--method", "luciddrag", "--model", tiny_sd, "--prompt", "a face", "-q"]
    args += ["--lora", "none", "--drag", "20,30:30,30", "-o", out]
    for s in ("mutual_attn_start_layer=4", "discriminator_steps=10", "inference_steps=10", "resize_width=0"):
        args += ["--set", s]
    r = dragkit(*args, env_extra={"DRAGKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["method"] == "luciddrag" and rec["info"]["intention"]["kind"] == "move"
    assert len(rec["info"]["guidance"]) > 0


@pytest.mark.slow
def test_several_results_one_per_intention_then_seed_variants(pipe):
    req = DragRequest(image(64, 64), [(20, 30), (40, 30)], [(18, 34), (44, 26)], prompt="a photo of a cat", seed=2)
    results = lucid(pipe)(req, progress=False, num_results=4, **QUICK)
    assert isinstance(results, list) and len(results) == 4
    intentions = [r.info["intention"] for r in results]
    kinds = [i["kind"] for i in intentions]
    n = len({*kinds})
    assert kinds[:2] == ["rotate", "enlarge"]  # the drag turns and widens
    assert [i["confidence"] for i in intentions[:n]] == sorted((i["confidence"] for i in intentions[:n]), reverse=True)
    assert [r.info["result"]["variant"] for r in results] == [0] * n + [1] * (4 - n)
    assert results[n].info["result"]["eta"] == 0.5 and results[n].info["intention"] == intentions[0]
    images = [r.image.tobytes() for r in results]
    assert len(set(images)) == 4  # every result differs
    one = pipe(req, method="luciddrag", progress=False, **QUICK)
    assert one.image.tobytes() == images[0]  # the best result is the single result


def test_an_unconditional_model_gives_seed_variants_and_says_why(tmp_path):
    from dragkit.pipelines.diffusion import DragDiffusionPipeline
    from dragkit.utils.testing import build_tiny_pixel

    pix = DragDiffusionPipeline.from_pretrained(build_tiny_pixel(tmp_path / "pix"))
    req = DragRequest(image(32, 32), [(10, 16)], [(16, 16)], seed=0)
    quick = {**QUICK, "mutual_attn_start_layer": 0}
    results = lucid(pix)(req, progress=False, num_results=2, **quick)
    assert [r.info["result"]["variant"] for r in results] == [0, 1]
    assert results[0].info["semantic_guidance"].startswith("not applied")
    assert results[0].image.tobytes() != results[1].image.tobytes()


@pytest.mark.slow
def test_the_loopback_endpoint_chooses_the_intentions(pipe):
    from dragkit.parts.intentions import LLMReasoner

    req = DragRequest(image(64, 64), [(20, 30)], [(30, 20)], prompt="a horse", seed=0)
    with Endpoint([json.dumps(GOOD)]) as ep:
        results = lucid(pipe)(req, progress=False, num_results=2, llm=LLMReasoner(ep.url, "m"), **QUICK)
    assert [r.info["intention"]["target_prompt"] for r in results] == ["a horse, raised head", "a horse, longer neck"]
    assert [r.info["intention"]["confidence"] for r in results] == [0.8, 0.5]
    assert len(ep.requests) == 1 and ep.requests[0]["body"]["messages"][-1]["content"][1]["type"] == "image_url"


@pytest.mark.slow
def test_a_user_discriminator_replaces_the_fitted_one(pipe):
    import torch

    from dragkit.core.errors import ParameterError

    class Brightness(torch.nn.Module):  # prefers brighter images
        def forward(self, x):
            return x.mean(1, keepdim=True)

    req = DragRequest(image(64, 64), [(20, 30)], [(30, 30)], seed=0)
    quick = {**QUICK, "guide_edit": 0.0, "guide_quality": 5.0}
    plain = pipe(req, method="luciddrag", progress=False, **{**quick, "guide_quality": 0.0})
    res = lucid(pipe)(req, progress=False, discriminator=Brightness(), **quick)
    assert res.info["discriminator"] == "Brightness" and "discriminator" not in res.info["profile"]
    brightness = [float(__import__("numpy").asarray(r.image, dtype=float).mean()) for r in (plain, res)]
    assert brightness[1] > brightness[0]
    with pytest.raises(ParameterError, match="discriminator: expected a torch.nn.Module"):
        lucid(pipe)(req, progress=False, discriminator="big", **quick)
    with pytest.raises(ParameterError, match="GuidanceOptions: only for methods whose sampler takes them"):
        lucid(pipe)(req, method="dragdiffusion", progress=False, num_results=2, **quick)
    with pytest.raises(ParameterError, match="num_results=0"):
        lucid(pipe)(req, progress=False, num_results=0, **quick)
    with pytest.raises(ParameterError, match="unknown parameter 'num_results'"):  # not a parameter of the base call
        pipe(req, method="luciddrag", progress=False, num_results=2, **quick)


@pytest.mark.slow
@pytest.mark.subprocess
def test_several_results_and_an_endpoint_from_the_cli(tiny_sd, tmp_path, face_png):
    out = tmp_path / "l.png"
    args = ["edit", face_png, "--method", "luciddrag", "--model", tiny_sd, "--prompt", "a horse", "-q"]
    args += ["--lora", "none", "--drag", "20,30:30,20", "-o", out, "--num-results", "3"]
    for s in ("mutual_attn_start_layer=4", "discriminator_steps=10", "inference_steps=10", "resize_width=0"):
        args += ["--set", s]
    env = {"DRAGKIT_CACHE": str(tmp_path / "cache"), "DRAGKIT_LLM_KEY": "sk-secret-456"}
    with Endpoint([json.dumps(GOOD)]) as ep:
        r = dragkit(*args, "--llm-url", ep.url, "--llm-model", "m", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert ep.requests[0]["auth"] == "Bearer sk-secret-456"
    files = [out, tmp_path / "l.1.png", tmp_path / "l.2.png"]
    records = [json.loads(f.with_suffix(".json").read_text()) for f in files]
    assert [rec["info"]["intention"]["confidence"] for rec in records] == [0.8, 0.5, 0.8]
    assert [rec["info"]["result"]["variant"] for rec in records] == [0, 0, 1]
    assert "raised head" in r.stdout and "seed variant 1" in r.stdout
    for f in files:
        assert f.exists() and "sk-secret" not in f.with_suffix(".json").read_text()
    bad = dragkit("edit", face_png, "--drag", "20,30:30,20", "-o", tmp_path / "g.png", "--num-results", "2")
    assert bad.returncode == 2 and "--num-results: only for methods that guide the sampling" in bad.stderr
    bad = dragkit(*args[:-2], "--llm-url", "http://127.0.0.1:9/v1")
    assert bad.returncode == 2 and "--llm-url and --llm-model go together" in bad.stderr
