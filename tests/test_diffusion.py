"""The diffusion engine and DragDiffusion, offline, on a tiny random-weight Stable Diffusion built here."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest, ModelError, ParameterError
from dragkit.engines import diffusion as D

from .helpers import final_features, image, sample, sampling_pair, state_of

pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def lora_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path / "cache"))


FAST = dict(resize_width=0, lora="none", drag_steps=8, mutual_attn_start_layer=4)


def test_loads_by_path_with_aligned_ddim_schedulers(pipe):
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert type(pipe.inverse_scheduler).__name__ == "DDIMInverseScheduler"
    assert not pipe.scheduler.config.clip_sample and not pipe.scheduler.config.set_alpha_to_one
    D.check_alignment(pipe.scheduler, pipe.inverse_scheduler, 50)
    assert D.inversion_step_count(0.7, 50) == 35
    assert int(pipe.scheduler.timesteps[50 - 35]) == 681
    assert len(pipe.unet.up_blocks) == 4  # the real feature index 2 exists


def test_inversion_then_sampling_is_exact_with_a_constant_noise_model(pipe, monkeypatch):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 4, 8, 8, generator=g)
    c = torch.randn(1, 4, 8, 8, generator=g) * 0.5
    monkeypatch.setattr(pipe.unet, "forward", lambda z, t, encoder_hidden_states, return_dict=False: (c.expand_as(z),))
    emb = torch.zeros(1, 77, 16)
    zt = pipe.engine.invert(z0, emb, 50, 35, progress=False)
    back = sample(pipe, zt, zt, emb, 15, [])
    assert torch.allclose(back[0:1], z0, atol=1e-4)
    assert not torch.allclose(zt, z0, atol=0.1)


@pytest.mark.slow
@torch.no_grad()
def test_inversion_then_sampling_reconstructs_with_the_tiny_unet(pipe):
    # a unit-scale latent, as an SD VAE gives (the tiny random VAE's latents are ~0.03 wide)
    z0 = torch.randn(1, 4, 10, 12, generator=torch.Generator().manual_seed(0))
    emb = pipe.engine.encode_prompt("a photo")
    zt = pipe.engine.invert(z0, emb, 50, 35, progress=False)
    back = sample(pipe, zt, zt, emb, 15, [])[0:1]
    assert float((zt - z0).norm() / z0.norm()) > 0.5  # t = 681 is far from the image
    assert float((back - z0).norm() / z0.norm()) < 0.05


def test_features_come_from_hooks_and_stop_the_forward_early(pipe):
    z = torch.randn(1, 4, 10, 12)
    emb = pipe.engine.encode_prompt("x")
    calls = []
    h = pipe.unet.up_blocks[3].register_forward_hook(lambda *a: calls.append(1))
    try:
        early = D.unet_forward(pipe.unet, z, 681, pipe.engine.cond(emb), [2], need_eps=False)
        assert early.eps is None and not calls  # the last up block never ran
        full = D.unet_forward(pipe.unet, z, 681, pipe.engine.cond(emb), [2], need_eps=True)
        assert full.eps.shape == z.shape and calls
    finally:
        h.remove()
    assert torch.allclose(early.features[2], full.features[2])
    with pytest.raises(ParameterError, match="feature_block=7"):
        D.unet_forward(pipe.unet, z, 681, pipe.engine.cond(emb), [7])


def test_mutual_attention_keeps_the_source_branch_and_changes_the_edited_one(pipe):
    emb = pipe.engine.encode_prompt("a photo").expand(2, -1, -1)
    g = torch.Generator().manual_seed(1)
    src, edit = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    plain = pipe.unet(torch.cat([src, edit]), 500, encoder_hidden_states=emb).sample
    names = D.self_attentions(pipe.unet)
    with D.attention_processors(pipe.unet, {n: D.MutualSelfAttentionProcessor() for n in names}):
        mutual = pipe.unet(torch.cat([src, edit]), 500, encoder_hidden_states=emb).sample
    assert torch.allclose(mutual[0], plain[0], atol=1e-5)
    assert not torch.allclose(mutual[1], plain[1], atol=1e-3)
    # the processors are back
    assert all(type(p).__name__ != "MutualSelfAttentionProcessor" for p in pipe.unet.attn_processors.values())
    assert len(names) == 10 and all(n.endswith("attn1") for n in names)


def test_selection_by_execution_order(pipe):
    names = D.self_attentions(pipe.unet)
    assert names[0].startswith("down_blocks.0.") and any(n.startswith("mid_block") for n in names)
    firsts = [n.split(".")[0] for n in names]
    assert firsts == sorted(firsts, key=["down_blocks", "mid_block", "up_blocks"].index)


@pytest.mark.slow
def test_edit_runs_drags_and_restores_everything(pipe):
    before = state_of(pipe.unet)
    req = DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo")
    steps = []
    out = pipe(req, progress=False, callback=steps.append, **{**FAST, "lora": "train", "lora_steps": 3})
    assert state_of(pipe.unet) == before
    assert out.image.size == (96, 80)
    assert out.info["lora"] == "trained" and out.info["drag_timestep"] == 681
    assert out.info["mutual_attention_blocks"] and all("attn1" in n for n in out.info["mutual_attention_blocks"])
    assert {"encode", "lora", "inversion", "drag", "sampling", "decode", "load"} <= set(out.info["profile"])
    assert all(v["peak_bytes"] for k, v in out.info["profile"].items())
    assert len(steps) == out.info["steps"] + 1 and "handles_xy" in steps[0]


@pytest.mark.slow
def test_everything_is_restored_after_an_edit_that_raised(pipe):
    before = state_of(pipe.unet)
    req = DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo")

    def boom(ev):
        if ev["step"] == 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        pipe(req, progress=False, callback=boom, **{**FAST, "lora": "train", "lora_steps": 2})
    assert state_of(pipe.unet) == before


@pytest.mark.slow
def test_same_seed_same_output(pipe):
    req = DragRequest(image(), [(40, 40)], [(56, 44)], prompt="a photo", seed=3)
    a = pipe(req, progress=False, **{**FAST, "lora": "train", "lora_steps": 2})
    b = pipe(req, progress=False, **{**FAST, "lora": "train", "lora_steps": 2})
    assert a.info["lora"] == "trained" and b.info["lora"] == "cached"
    assert a.handles == b.handles
    # the re-run reads the source branch recorded from the first run's batch of two and samples the edited branch
    # alone (source_cache): a batch of one rounds differently, so it is equal within uint8 rounding, not bit for bit
    diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
    assert b.info["source_cache"] == "hit" and diff.max() <= 1
    c = pipe(req, progress=False, source_cache=False, **{**FAST, "lora": "train", "lora_steps": 2})
    assert np.array_equal(np.asarray(a.image), np.asarray(c.image)) and a.handles == c.handles  # the same work: exact


@pytest.mark.slow
def test_the_drag_moves_features_towards_the_targets(pipe):
    req = DragRequest(image(seed=5), [(30, 30), (70, 50)], [(46, 30), (70, 34)], prompt="a photo")
    out = pipe(req, progress=False, **{**FAST, "drag_steps": 40})
    first, last = out.trajectory[0]["distances"], out.trajectory[-1]["distances"]
    assert sum(last) < 0.6 * sum(first), (first, last)


@pytest.mark.slow
def test_mask_term_only_with_a_mask(pipe):
    req = DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo")
    free = pipe(req, progress=False, **FAST)
    assert "mask" not in free.trajectory[0]["losses"]
    m = np.zeros((80, 96), bool)
    m[20:60, 20:80] = True
    masked = pipe(DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo", mask=m), progress=False, **FAST)
    assert masked.trajectory[1]["losses"]["mask"] > 0 and masked.params["mask"] == "given"


@pytest.mark.slow
def test_odd_sizes_are_mapped_not_shifted(pipe):
    img = image(100, 70)
    out = pipe(DragRequest(img, [(50, 35)], [(50, 35)], prompt="x"), progress=False, **FAST)
    assert out.info["working_size"] == [104, 72] and out.info["scale"] == [1.04, 72 / 70]
    assert out.image.size == (100, 70)
    assert out.handles == [(50.0, 35.0)]  # a no-op pair stays exactly where it was
    assert out.info["noop_pairs"] == [1]


@pytest.mark.slow
def test_the_official_size_rule_edits_at_the_raw_size_with_their_grid_and_points(pipe):
    """``size_rule=official``: DragDiffusion's DragBench script on a 256x170 image (a DragBench height that is not a
    multiple of 8): the image goes to the VAE at its own size (the VAE keeps 21 latent rows, 168 pixels), the
    supervision grid is int(0.5·side) = 85x128, and each point is (y / 170 · 85, x / 256 · 128) in float32, rounded
    half to even — their arithmetic, written out here."""
    img = image(256, 170)
    handles, targets = [(101, 57), (30.5, 101)], [(130, 41), (30.5, 133)]
    seen = []
    out = pipe(
        DragRequest(img, handles, targets, prompt="x"),
        progress=False,
        callback=lambda ev: seen.append((ev["step"], ev["handles"].tolist(), ev["latent"].shape)),
        size_rule="official",
        **{**FAST, "drag_steps": 1},
    )
    H, W, h, w = 170, 256, int(0.5 * 170), int(0.5 * 256)
    theirs = [torch.round(torch.tensor([y / H * h, x / W * w])).tolist() for x, y in handles]
    assert out.info["working_size"] == [256, 170] and out.info["grid_size"] == [h, w] == [85, 128]
    assert seen[0][1] == theirs == [[28.0, 50.0], [50.0, 15.0]]  # 28.5 → 28 and 15.25 → 15: half to even, float32
    assert tuple(seen[0][2][-2:]) == (21, 32)  # the latent of the raw 256x170 image: the VAE cropped 2 rows
    assert out.image.size == (256, 170)
    rounded = pipe(DragRequest(img, handles, targets, prompt="x"), progress=False, **{**FAST, "drag_steps": 0})
    assert rounded.info["working_size"] == [256, 168] and rounded.info["grid_size"] == [84, 128]  # ours: resized
    with pytest.raises(ParameterError, match="size_rule=official edits the image at its own size"):
        pipe(DragRequest(img, handles, targets), progress=False, size_rule="official", resize_width=512, lora="none")


def test_long_prompts_are_truncated_with_a_warning(pipe, caplog):
    with caplog.at_level(logging.WARNING):
        emb = pipe.engine.encode_prompt("word " * 100)
    assert emb.shape[1] == 77 and "the rest is ignored" in caplog.text


@pytest.mark.slow
def test_lora_path_that_does_not_fit(pipe, tmp_path):
    from dragkit.utils.testing import build_sd_pipeline

    other = build_sd_pipeline(tmp_path / "other", unet_channels=(8, 16, 16, 32))
    from dragkit import DragDiffusionPipeline

    o = DragDiffusionPipeline.from_pretrained(other)
    o.set_progress_bar_config(disable=True)
    r = o(
        DragRequest(image(), [(40, 40)], [(50, 40)], prompt="p"),
        progress=False,
        **{**FAST, "lora": "train", "lora_steps": 1},
    )
    saved = r.info["lora_cache"]
    before = state_of(pipe.unet)
    with pytest.raises(ModelError, match="does not fit this model's UNet"):
        pipe(DragRequest(image(), [(40, 40)], [(50, 40)], prompt="p"), progress=False, **{**FAST, "lora": saved})
    assert state_of(pipe.unet) == before
    with pytest.raises(Exception, match="does not exist"):
        pipe(DragRequest(image(), [(40, 40)], [(50, 40)], prompt="p"), progress=False, **{**FAST, "lora": "/nope"})


def test_model_loading_errors(tmp_path):
    from dragkit import DragDiffusionPipeline

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a diffusers pipeline folder"):
        DragDiffusionPipeline.from_pretrained(tmp_path / "empty")
    with pytest.raises(ModelError, match="cannot load model 'nobody/no-such-model'.*local diffusers folder"):
        DragDiffusionPipeline.from_pretrained("nobody/no-such-model")
    with pytest.raises(ModelError, match="not found"):
        DragDiffusionPipeline.from_pretrained(tmp_path / "x.safetensors")


def test_method_and_engine_mismatches(pipe, gan_pipe):
    req = DragRequest(image(), [(40, 40)], [(50, 40)])
    with pytest.raises(ParameterError, match="runs on the gan engine, not on diffusion"):
        pipe(req, method="draggan")
    with pytest.raises(ParameterError, match="latent_block is a gan engine parameter"):
        pipe(req, latent_block=2)
    with pytest.raises(ParameterError, match="inversion_strength=1.5"):
        pipe(req, inversion_strength=1.5)


@pytest.mark.slow
def test_an_unwritable_cache_still_edits(pipe, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DRAGKIT_CACHE", str(blocker))
    req = DragRequest(image(), [(40, 40)], [(50, 40)], prompt="p")
    with caplog.at_level(logging.WARNING):
        out = pipe(req, progress=False, **{**FAST, "lora": "train", "lora_steps": 1})
    assert out.info["lora"] == "trained" and out.info["lora_cache"] is None and "not cached" in caplog.text


@pytest.mark.slow
def test_cancel_ends_lora_training_early_and_nothing_is_cached(pipe, tmp_path):
    polls = []
    req = DragRequest(image(), [(40, 40)], [(50, 40)], prompt="p")
    out = pipe(
        req,
        progress=False,
        cancel=lambda: polls.append(1) or len(polls) > 3,
        **{**FAST, "lora": "train", "lora_steps": 50},
    )
    assert out.info["lora_stopped"] == "cancelled after 3 of 50 steps" and out.info["lora_cache"] is None
    assert out.info["stop_reason"] == "cancelled" and out.info["steps"] == 0  # the drag stops at once too
    assert not any((tmp_path / "cache").rglob("*.safetensors"))  # a LoRA cut short is never reused
    assert out.image.size == req.image.size


@pytest.mark.slow
def test_bfloat16_on_cpu(tiny_sd):
    from dragkit import DragDiffusionPipeline

    p = DragDiffusionPipeline.from_pretrained(tiny_sd, dtype=torch.bfloat16)
    p.set_progress_bar_config(disable=True)
    assert p.unet.dtype == torch.bfloat16
    out = p(DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo"), progress=False, **FAST)
    assert out.info["dtype"] == "bfloat16" and out.image.size == (96, 80)


@pytest.mark.slow
def test_pixel_space_unconditional_models_run_the_same_preset(pixel_pipe, caplog):
    p = pixel_pipe
    assert p.vae is None and p.text_encoder is None and not p.engine.conditional
    names = D.self_attentions(p.unet)
    assert names and all("attentions" in n for n in names)
    before = state_of(p.unet)
    req = DragRequest(image(64, 64), [(20, 30)], [(30, 30)], prompt="ignored")
    with caplog.at_level(logging.WARNING):
        out = p(req, progress=False, **{**FAST, "lora": "train", "lora_steps": 2, "mutual_attn_start_layer": 1})
    assert "prompt is ignored" in caplog.text
    assert state_of(p.unet) == before
    assert out.image.size == (64, 64) and out.info["lora"] == "trained"
    assert out.info["mutual_attention_blocks"] == names[1:]
    assert out.info["working_size"] == [32, 32] and out.info["grid_size"] == [16, 16]  # its own resolution
    # the identity codec: inversion then sampling returns the image itself
    x = p.engine.image_tensor(image(64, 64), (64, 64))
    assert torch.equal(p.engine.encode(x).mean, x)
    assert torch.allclose(p.engine.decode(x), (x / 2 + 0.5).clamp(0, 1))


def test_mutual_attention_on_a_unet2dmodel(pixel_pipe):
    unet = pixel_pipe.unet
    g = torch.Generator().manual_seed(2)
    src, edit = torch.randn(1, 3, 32, 32, generator=g), torch.randn(1, 3, 32, 32, generator=g)
    plain = unet(torch.cat([src, edit]), 500).sample
    with D.attention_processors(unet, {n: D.MutualSelfAttentionProcessor() for n in D.self_attentions(unet)}):
        mutual = unet(torch.cat([src, edit]), 500).sample
    assert torch.allclose(mutual[0], plain[0], atol=1e-5)
    assert not torch.allclose(mutual[1], plain[1], atol=1e-4)


def test_packaged_model_names(monkeypatch, tmp_path):
    from dragkit import DragDiffusionPipeline
    from dragkit.pipelines import diffusion as pd
    from dragkit.utils.testing import build_tiny_pixel

    monkeypatch.setitem(pd.PACKAGED_MODELS, "faces64", tmp_path / "missing")
    with pytest.raises(ModelError, match="'faces64' is missing from this installation"):
        DragDiffusionPipeline.from_pretrained("faces64")
    monkeypatch.setitem(pd.PACKAGED_MODELS, "faces64", build_tiny_pixel(tmp_path / "f64"))
    p = DragDiffusionPipeline.from_pretrained("faces64")
    assert p.model_name == "faces64" and not p.engine.conditional


@pytest.mark.slow
def test_model_defaults_file(tmp_path, caplog):
    import json

    from dragkit import DragDiffusionPipeline
    from dragkit.utils.testing import build_tiny_pixel

    folder = build_tiny_pixel(tmp_path / "px")
    measured = {"defaults": {"feature_block": 1, "stop_distance": 1.5}, "methods": {"gooddrag": {"latent_lr": 0.05}}}
    (folder / "dragkit.json").write_text(json.dumps(measured))
    p = DragDiffusionPipeline.from_pretrained(folder)
    p.set_progress_bar_config(disable=True)
    assert p.model_defaults == {"feature_block": 1, "stop_distance": 1.5}
    assert p.defaults_for("gooddrag") == {"feature_block": 1, "stop_distance": 1.5, "latent_lr": 0.05}
    img = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    req = DragRequest(img, [(10, 10)], [(14, 12)], seed=0)
    res = p(req, lora="none", drag_steps=1, feature_block=0, progress=False)
    # the model's measured defaults sit between the preset's and the caller's; a method's own apply to it alone
    assert res.params["stop_distance"] == 1.5 and res.params["feature_block"] == 0 and res.params["latent_lr"] == 0.01
    assert res.info["model_defaults"] == {"stop_distance": 1.5}
    res = p(req, method="gooddrag", lora="none", drag_steps=1, drag_phases=1, inference_steps=4, progress=False)
    assert res.params["latent_lr"] == 0.05 and res.info["model_defaults"]["latent_lr"] == 0.05
    for bad, why in [
        ({"defaults": {}, "methods": {"gooddrug": {}}}, r"unknown method 'gooddrug' \(did you mean gooddrag\?\)"),
        ({"defaults": {}, "methods": {"draggan": {}}}, "'draggan' in 'methods' is not a diffusion preset"),
        ({"defaults": {}, "methods": {"gooddrag": {"latent_lr": -1}}}, "latent_lr"),
        ({"defaults": {"feature_blok": 1}}, "feature_blok"),
        ({"defaults": {"stop_distance": -1}}, "stop_distance"),
        ({"defaults": {"latent_block": 1}}, "cannot be a model default"),
        ({"feature_block": 1}, "defaults"),
    ]:
        (folder / "dragkit.json").write_text(json.dumps(bad))
        with pytest.raises(ModelError, match=why):
            DragDiffusionPipeline.from_pretrained(folder)
    (folder / "dragkit.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a valid model defaults file"):
        DragDiffusionPipeline.from_pretrained(folder)


@pytest.mark.slow
def test_shipped_faces64_reconstructs_a_real_face_after_inversion(gan_pipe):
    """The real shipped weights: a fresh DCGAN face inverted by DDIM to strength 0.7 and sampled back comes out at
    over 33 dB PSNR (random weights of the same layout do not get there; measured over 50 faces: docs/faces64.md)."""
    from dragkit import DragDiffusionPipeline

    p = DragDiffusionPipeline.from_pretrained("faces64")
    p.set_progress_bar_config(disable=True)
    assert p.model_name == "faces64" and not p.engine.conditional and p.unet.dtype == torch.float32
    face = gan_pipe.generate(123).image
    x = p.engine.image_tensor(face, (64, 64))
    n_inv = D.inversion_step_count(0.7, 50)
    with torch.no_grad():
        zt = p.engine.invert(x, None, 50, n_inv, progress=False)
        back = sample(p, zt, zt, None, 50 - n_inv, [])[:1]
    psnr = 10 * torch.log10(4 / ((back.clamp(-1, 1) - x) ** 2).mean())
    assert psnr > 33, float(psnr)
    # and the inverted latent is noise-like, not the image: the model really carried it to t = 681
    assert 0.6 < float(zt.std()) < 1.4


@pytest.mark.slow
def test_closs_pulls_the_edited_features_at_the_target_toward_the_source_at_the_handle(pipe):
    """AdaptiveDrag's CLoss acts on the latent that is sampled: with it, the edited branch's features at the target
    end closer to the source branch's at the handle than without it (same start, same schedule)."""
    from dragkit.parts import CorrespondenceGuide
    from dragkit.parts.closs import correspondence_loss

    z_src, z_edit, embeds, mutual, h, t = sampling_pair(pipe)
    closs = CorrespondenceGuide(weight=100.0, lr=0.05, steps=1000, radius=2, handles=h, targets=t)

    def distance(z):  # the correspondence distance of a sampled pair, read at the last timestep
        f = final_features(pipe, z, embeds)
        return float(correspondence_loss(f[1:], f[:1], h, t, 2))

    reports = []
    with torch.no_grad():
        off = sample(pipe, z_src, z_edit, embeds, 3, mutual)
        on = sample(pipe, z_src, z_edit, embeds, 3, mutual, guides=[closs], reports=reports)
        assert torch.equal(on[0], off[0])  # the source branch is untouched
        assert distance(on) < 0.8 * distance(off)
    history = [r["closs"] for r in reports]
    assert len(history) == 7 and history[-1] < history[0]


@pytest.mark.slow
def test_closs_in_an_edit_is_reported(pipe):
    req = DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo")
    out = pipe(req, progress=False, **{**FAST, "closs_weight": 100.0, "closs_steps": 3})
    assert len(out.info["closs"]) == 3 and all(v >= 0 for v in out.info["closs"])
    assert "closs" not in pipe(req, progress=False, **FAST).info


def test_a_latent_guides_adam_step_changes_only_the_editable_region():
    closs_step = D.latent_step

    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    w = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def loss_of(x):  # reaches every element, as the UNet's receptive field does
        return (x * w).sum() ** 2

    free, _ = closs_step(z, loss_of, 0.01, None)
    assert torch.allclose((free - z).abs(), torch.full_like(z, 0.01), atol=1e-6)  # a fresh Adam step: lr · sign
    where = torch.zeros(1, 1, 8, 8)
    where[..., 2:5, 3:6] = 1
    held, _ = closs_step(z, loss_of, 0.01, where)
    moved = (held != z).any(dim=1)[0]
    assert torch.equal(moved, where[0, 0].bool())  # inside moves, outside is exactly the input
    assert torch.allclose(held * where, free * where)


@pytest.fixture(scope="module")
def few_attention_pipe(tmp_path_factory):
    """A reduced SD 1.5-layout model with three UNet levels: 7 self-attentions, fewer than the first mutual layer of
    every preset (fastdrag and dragkit start at 7, the others at 10)."""
    from dragkit import DragDiffusionPipeline
    from dragkit.utils.testing import build_sd_pipeline

    folder = build_sd_pipeline(tmp_path_factory.mktemp("sd-7-attn"), unet_channels=(8, 16, 16))
    p = DragDiffusionPipeline.from_pretrained(folder)
    p.set_progress_bar_config(disable=True)
    assert len(p.engine.self_attentions()) == 7
    return p


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["dragkit", "fastdrag", "dragdiffusion", "gooddrag", "luciddrag", "stabledrag", "clipdrag"]
)
def test_every_preset_finishes_on_a_unet_with_fewer_self_attentions_than_its_first_mutual_layer(
    few_attention_pipe, method, caplog
):
    """Issue 32: dragkit and fastdrag read the source branch from the inversion and ended in 'no recorded source
    inputs' on such a UNet, where dragdiffusion warned and finished. Every preset now warns and finishes, twice (the
    second edit of the same image reads the kept source). Since issue 34 a preset's own layer is carried over to such
    a UNet by resolution (docs/model_families.md), so the case arises from a layer the user names: 12 here."""
    req = DragRequest(image(64, 64), [(20, 30)], [(30, 30)], mask=np.ones((64, 64), bool))
    quick = dict(resize_width=0, lora="none", drag_steps=2, inference_steps=20, drag_phases=2, guide_steps=2)
    carried = few_attention_pipe(req, method=method, progress=False, **quick)
    assert carried.info["mutual_attention_blocks"] and "mutual_attn_start_layer" in carried.info["adapted_to_model"]
    quick["mutual_attn_start_layer"] = 12  # the user's number is used as given
    for visit in ("miss", "hit"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out = few_attention_pipe(req, method=method, progress=False, **quick)
        assert "no reference-latent control" in caplog.text
        assert out.info["mutual_attention_blocks"] == []
        assert out.image.size == (64, 64)
        if method in ("dragkit", "fastdrag"):  # they read the source from the inversion, and keep it
            assert out.info["source_cache"] == visit
            assert out.handles[0] == pytest.approx((30.0, 30.0), abs=1.0)  # the warp moved the handle to its target


@pytest.mark.slow
def test_live_previews_decode_the_drag_with_a_tiny_autoencoder(pipe, tmp_path, monkeypatch, caplog):
    """``record_frames`` (the web app's live preview): every N drag steps and the last, what the latent would denoise
    to, decoded by ``preview_vae`` (a TAESD here; ``auto`` falls back to the model's VAE, said once, when TAESD
    cannot be loaded); the edit itself is the same with or without them."""
    from diffusers import AutoencoderTiny

    from dragkit.engines.diffusion import inpaint

    torch.manual_seed(0)
    taesd = tmp_path / "taesd"
    AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4).save_pretrained(taesd)
    req = DragRequest(image(), [(40, 40)], [(56, 40)], prompt="a photo")
    seen: list = []
    fast = {**FAST, "source_cache": False}  # both edits invert (a cached source branch is denoised in a batch of 1)
    out = pipe(req, progress=False, callback=seen.append, record_frames=3, preview_vae=str(taesd), **fast)
    steps = [s for s, _ in out.frames]
    assert steps[:3] == [0, 3, 6] and steps[-1] == out.info["steps"]
    assert all(f.size == req.image.size for _, f in out.frames)
    assert [e["step"] for e in seen if e.get("preview") is not None] == steps
    assert out.info["preview_vae"] == str(taesd) and isinstance(pipe.engine.tiny_vae(str(taesd)), AutoencoderTiny)
    plain = pipe(req, progress=False, **fast)
    assert np.array_equal(np.asarray(out.image), np.asarray(plain.image)) and not plain.frames

    def unreachable(name, *a):
        raise ModelError(f"cannot load the tiny autoencoder {name!r}: offline")

    monkeypatch.setattr(inpaint, "load_tiny_vae", unreachable)
    with caplog.at_level(logging.WARNING):
        fallback = pipe(req, progress=False, record_frames=4, **FAST)
    assert fallback.info["preview_vae"] == "model (TAESD could not be loaded)" and fallback.frames
    assert "previews are decoded with the model's own VAE" in caplog.text
    with pytest.raises(ModelError, match="cannot load the tiny autoencoder"):
        pipe(req, progress=False, record_frames=4, preview_vae=str(tmp_path / "missing"), **FAST)
