"""LucidDrag end to end on the tiny models: no drag loop, guided sampling, the intention recorded."""

import json

from dragkit import DragRequest
from dragkit.intentions import Intention

from .test_cli import dragkit
from .test_diffusion import image

QUICK = dict(resize_width=0, lora="none", mutual_attn_start_layer=4, discriminator_steps=20, inference_steps=10)


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
    other = pipe(req, method="luciddrag", progress=False, intention=mine, **QUICK)
    assert other.info["intention"]["target_prompt"] == "a photo of a fat cat"
    assert other.image.tobytes() != res.image.tobytes()  # the semantic direction acted


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
