"""Issue 11's optimizations: the exact ones give the reference recipe's numbers (up to float noise), the named
approximations run, are reported and refuse the methods they cannot serve."""

import json

import numpy as np
import pytest
import torch

from dragkit import DragRequest, ParameterError
from dragkit.bench.speed import reference_edit
from dragkit.engines import diffusion as D

from .helpers import dragkit, image, state_of


@pytest.fixture(autouse=True)
def lora_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path / "cache"))


FAST = dict(resize_width=0, drag_steps=6, mutual_attn_start_layer=4, lora="train", lora_steps=2)


def masked_request():
    m = np.zeros((80, 96), bool)
    m[16:64, 24:88] = True
    return DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo", mask=m, seed=3)


def pixels(result):
    return np.asarray(result.image, dtype=np.int16)


@pytest.mark.slow
@pytest.mark.parametrize("masked", [True, False])
def test_dragkit_gives_the_reference_recipes_numbers(pipe, masked):
    req = masked_request()
    if not masked:
        req = DragRequest(req.image, req.handles, req.targets, prompt=req.prompt, seed=req.seed)
    before = state_of(pipe.unet)
    ref = reference_edit(pipe, req, **FAST)
    ours = pipe(req, progress=False, **FAST)
    again = pipe(req, progress=False, **FAST)  # the LoRA from the cache
    assert state_of(pipe.unet) == before
    assert all(p.requires_grad and p.grad is None for p in pipe.unet.parameters())  # restored, nothing kept
    assert ref.info["recipe"] == "reference" and ref.info["lora_cache"] is None  # trained, never cached
    assert ours.info["lora"] == "trained" and again.info["lora"] == "cached"
    for other in (ours, again):
        assert other.info["steps"] == ref.info["steps"]
        assert [r["handles"] for r in other.trajectory] == [r["handles"] for r in ref.trajectory]
        for a, b in zip(other.trajectory, ref.trajectory, strict=True):
            for k in b["losses"]:
                assert a["losses"][k] == pytest.approx(b["losses"][k], rel=1e-4, abs=1e-6)
        assert np.abs(pixels(other) - pixels(ref)).max() <= 1  # uint8 rounding of float noise at most


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_numbers(pipe):
    req = masked_request()
    plain = pipe(req, progress=False, **{**FAST, "lora": "none"})
    ckpt = pipe(req, progress=False, grad_checkpointing=True, **{**FAST, "lora": "none"})
    assert not pipe.unet.is_gradient_checkpointing
    for a, b in zip(ckpt.trajectory, plain.trajectory, strict=True):
        assert a["handles"] == b["handles"] and a["losses"] == pytest.approx(b["losses"], rel=1e-5, abs=1e-7)
    assert np.abs(pixels(ckpt) - pixels(plain)).max() <= 1


def test_mutual_attention_reading_a_recorded_source_equals_the_source_in_the_batch(pipe, pixel_pipe):
    emb = pipe.engine.encode_prompt("a photo")
    g = torch.Generator().manual_seed(1)
    for p, shape, cond in (
        (pipe, (1, 4, 8, 8), lambda b: {"encoder_hidden_states": emb.expand(b, -1, -1)}),
        (pixel_pipe, (1, 3, 32, 32), lambda b: {}),
    ):
        unet, names = p.unet, D.self_attentions(p.unet)
        src, edit = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        with D.attention_processors(unet, {n: D.MutualSelfAttentionProcessor() for n in names}):
            pair = unet(torch.cat([src, edit]), 500, **cond(2)).sample
        store = {}
        modules = D.attention_modules(unet)
        with D.attention_processors(unet, {n: D.RecordingProcessor(modules[n].processor, store, n) for n in names}):
            plain = unet(src, 500, **cond(1)).sample
        assert torch.allclose(plain[0], pair[0], atol=1e-5) and set(store) == set(names)
        with D.attention_processors(unet, {n: D.MutualSelfAttentionProcessor(store, n) for n in names}):
            alone = unet(edit, 500, **cond(1)).sample
        assert torch.allclose(alone[0], pair[1], atol=1e-5)


def test_source_kv_from_the_inversion_is_a_named_approximation(pipe):
    req = masked_request()
    exact = pipe(req, progress=False, **{**FAST, "lora": "none"})
    approx = pipe(req, progress=False, source_kv="inversion", **{**FAST, "lora": "none"})
    assert approx.params["source_kv"] == "inversion" and exact.params["source_kv"] == "recompute"
    assert approx.info["steps"] == exact.info["steps"]  # the drag is the same; only the sampling differs
    diff = np.abs(pixels(approx) - pixels(exact))
    assert 0 < diff.mean() < 20  # close to, but not exactly, the recomputed source branch
    with pytest.raises(ParameterError, match="source_kv=inversion"):
        pipe(req, progress=False, method="adaptivedrag", source_kv="inversion", **{**FAST, "lora": "none"})
    with pytest.raises(ParameterError, match="source_kv must be recompute"):
        reference_edit(pipe, req, source_kv="inversion", **FAST)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sd", "pixel"])
def test_the_same_source_edited_again_skips_inversion_and_the_source_branch_with_the_same_numbers(
    pipe, pixel_pipe, which
):
    p = pipe if which == "sd" else pixel_pipe
    fast = {**FAST, "lora": "none"} if which == "sd" else dict(drag_steps=4, lora="none", mutual_attn_start_layer=0)
    req = masked_request()
    if which == "pixel":
        m = np.zeros((32, 32), bool)
        m[4:28, 4:28] = True
        req = DragRequest(image().resize((32, 32)), [(12, 12)], [(18, 12)], mask=m, seed=3)
    moved = DragRequest(
        req.image, [(req.handles[0][0], req.handles[0][1] + 4)], req.targets, mask=req.mask, prompt=req.prompt, seed=5
    )
    p.clear_source_cache()
    calls = []
    hook = p.unet.register_forward_hook(
        lambda m, args, kw, out: calls.append(len(kw.get("sample", args[0]))), with_kwargs=True
    )
    try:
        first = p(req, progress=False, **fast)
        n_first = len(calls)
        again = p(moved, progress=False, **fast)  # other points, same image, prompt and settings: a hit
        n_again = len(calls) - n_first
    finally:
        hook.remove()
    assert (first.info["source_cache"], again.info["source_cache"]) == ("miss", "hit")
    # the first edit samples [source, edited] as one batch and records the source half from it; the hit skips the
    # inversion (35 UNet calls: 0.7 of 50 steps) and samples the edited branch alone; the drags differ
    assert n_first - n_again == 35 + first.info["steps"] - again.info["steps"]
    # and the first edit's sampling is DragDiffusion's own: 35 calls on the batch of two, no separate source pass
    assert calls[n_first - 35 : n_first] == [2] * 35 and calls[:n_first].count(2) == 35
    assert set(calls[n_first:]) == {1}  # the hit: the edited branch alone
    fresh = p(moved, progress=False, source_cache=False, **fast)
    assert fresh.info["source_cache"] == "off"
    assert [r["handles"] for r in again.trajectory] == [r["handles"] for r in fresh.trajectory]
    assert np.abs(pixels(again) - pixels(fresh)).max() <= 1  # uint8 rounding of float noise at most
    # anything the source depends on makes a miss, and the cache then holds the new source
    assert p(moved, progress=False, **{**fast, "inversion_strength": 0.5}).info["source_cache"] == "miss"
    assert p(req, progress=False, **fast).info["source_cache"] == "miss"
    assert p(req, progress=False, **fast).info["source_cache"] == "hit"


@pytest.mark.slow
def test_the_source_cache_stays_out_of_what_it_cannot_serve(pipe, monkeypatch, tmp_path):
    req = masked_request()
    assert reference_edit(pipe, req, **FAST).info["source_cache"] == "off"
    assert pipe(req, progress=False, method="adaptivedrag", **FAST).info["source_cache"] == "off"  # reads more
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")  # the LoRA cannot be cached: its weights have no name
    assert pipe(req, progress=False, **FAST).info["source_cache"] == "off"


@pytest.mark.slow
def test_autocast_and_channels_last_run_and_are_recorded(pipe):
    req = masked_request()
    exact = pipe(req, progress=False, **{**FAST, "lora": "none"})
    bf16 = pipe(req, progress=False, autocast="bf16", channels_last=True, **{**FAST, "lora": "none"})
    assert bf16.params["autocast"] == "bf16" and bf16.params["channels_last"]
    assert all(p.is_contiguous() for p in pipe.unet.parameters())  # the layout is restored
    assert np.abs(pixels(bf16) - pixels(exact)).mean() < 20
    with pytest.raises(ParameterError, match="autocast"):
        pipe(req, progress=False, autocast="fp8", **FAST)


@pytest.mark.slow
@pytest.mark.subprocess
def test_bench_speed_command(tiny_sd, tmp_path, face_png):
    from PIL import Image

    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.ones((32, 32), np.uint8) * 255, 16)).save(mask)
    out = tmp_path / "speed.json"
    r = dragkit(
        "bench-speed", "--model", tiny_sd, "--image", face_png, "--drag", "30,40:30,34", "--mask", mask,
        "--set", "lora_steps=30", "--set", "drag_steps=4", "--set", "resize_width=0", "--json", out,
        "--method", "fastdrag", "--set", "mutual_attn_start_layer=4",
        "--method", "gooddrag:drag_steps=1,drag_phases=2,lora_steps=3",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| drag + sampling time |" in r.stdout and "| **total** |" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["reference"]["lora"] == "trained" and rep["dragkit_first"]["lora"] == "trained"
    assert rep["dragkit"]["lora"] == "cached" and rep["output_max_pixel_difference"] <= 1
    assert (rep["dragkit"]["source_cache"], rep["dragkit_reedit"]["source_cache"]) == ("miss", "hit")
    for run in ("reference", "dragkit", "dragkit_first", "dragkit_reedit"):
        assert {"lora", "inversion", "drag", "sampling"} <= set(rep[run]["stages"])
        assert all(v["seconds"] >= 0 and v["peak_bytes"] > 0 for v in rep[run]["stages"].values())
        assert all(rep[run]["stages"][k]["seconds"] > 0 for k in ("drag", "sampling"))
    assert set(rep["ratios"]) >= {"drag_and_sampling_time", "whole_edit_time_lora_cached", "drag_peak_memory"}
    assert all(0 < v < float("inf") for v in rep["ratios"].values())  # figures, printed; no timing is asserted
    fast = rep["methods"]["fastdrag"]  # another preset beside the reference, as a user runs it
    assert fast["steps"] == 0 and {"warp", "sampling"} <= set(fast["stages"]) and "drag" not in fast["stages"]
    assert "| fastdrag |" in r.stdout
    good = rep["methods"]["gooddrag:drag_steps=1,drag_phases=2,lora_steps=3"]  # its own budget, by name
    assert 1 <= good["steps"] <= 2 and {"lora", "trajectory", "drag", "sampling"} <= set(good["stages"])
    bad = dragkit("bench-speed", "--method", "gooddrag:drag_stepz=1")
    assert bad.returncode == 2 and "drag_stepz" in bad.stderr and "one edit" not in bad.stderr
    bad = dragkit("bench-speed", "--drag", "1,1:2,2")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "dragkit: error: --drag and --mask go with --image (the default edit has its own)"
    ]
    bad = dragkit("bench-speed", "--json", tmp_path / "x.txt")
    assert bad.returncode == 2 and "must end in .json" in bad.stderr
