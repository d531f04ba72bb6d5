"""SDXL and SD 2.x v-prediction on the diffusion engine: the model family read from the checkpoint's configs, SDXL's
two text encoders and size conditioning, the presets' layer numbers carried over to SDXL's UNet, the LoRA saved and
read back the SDXL way, and v-prediction handled (not ignored) everywhere a model output is read; every diffusion
preset through the command line on both tiny models."""

import json

import numpy as np
import pytest
import torch

from dragkit import DragRequest, ModelError
from dragkit.engines.diffusion import PromptEmbeds
from dragkit.engines.diffusion.layout import translate_feature_block, translate_mutual_start

from .helpers import image

pytest.importorskip("diffusers")

FAST = dict(resize_width=0, lora="none", drag_steps=4)
PRESETS = ("dragdiffusion", "stabledrag", "adaptivedrag", "clipdrag", "luciddrag", "gooddrag", "fastdrag", "dragkit")


def masked(prompt="a photo"):
    m = np.zeros((80, 96), bool)
    m[16:64, 24:88] = True
    return DragRequest(image(), [(40, 40)], [(56, 40)], prompt=prompt, mask=m, seed=3)


def test_sdxl_is_read_from_its_configs_and_conditions_on_both_encoders_and_the_size(xl_pipe):
    engine = xl_pipe.engine
    assert engine.family == "sdxl" and type(xl_pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    e = engine.encode_prompt("a photo", (96, 80))
    assert isinstance(e, PromptEmbeds)
    assert e.hidden.shape == (1, 77, 8 + 16) and e.pooled.shape == (1, 16)  # both encoders side by side
    assert e.time_ids.tolist() == [[80.0, 96.0, 0.0, 0.0, 80.0, 96.0]]  # (height, width), uncropped, same target
    assert engine.encode_prompt("a photo").time_ids.tolist() == [[256.0, 256.0, 0.0, 0.0, 256.0, 256.0]]
    assert not torch.equal(e.hidden, engine.encode_prompt("a cat", (96, 80)).hidden)
    cond = engine.cond(e, 2)
    assert cond["encoder_hidden_states"].shape[0] == 2 and cond["added_cond_kwargs"]["time_ids"].shape == (2, 6)


def test_the_presets_layer_numbers_are_carried_to_sdxl_by_resolution():
    from diffusers import UNet2DConditionModel

    from dragkit.engines.diffusion import self_attentions

    unet = UNet2DConditionModel(  # SDXL's blocks and transformer depths at 1/10 of its width
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    )
    names = self_attentions(unet)
    assert len(names) == 70  # as SDXL: 24 down, 10 middle, 36 up
    assert names[translate_mutual_start(10, unet)].startswith("up_blocks.1.attentions.0.")  # DragDiffusion's: 64
    assert translate_mutual_start(10, unet) == 64 and translate_mutual_start(7, unet) == 34  # FastDrag's: every up one
    assert translate_mutual_start(13, unet) == 64  # SD 1.5's finest up block (1/1) has no SDXL match: the finest there
    assert (
        translate_feature_block(2, unet) == 1 and translate_feature_block(3, unet) == 2
    )  # the same output resolution


@pytest.mark.slow
def test_an_sdxl_edit_records_what_was_carried_over_and_moves_nothing_outside_the_mask(xl_pipe):
    out = xl_pipe(masked(), method="dragdiffusion", progress=False, composite="mask", **FAST)
    assert out.info["model_family"] == "sdxl" and out.info["prediction_type"] == "epsilon"
    assert out.info["adapted_to_model"] == {
        "feature_block": {"preset": 2, "used": 1},
        "mutual_attn_start_layer": {"preset": 10, "used": 9},
    }
    assert out.params["feature_block"] == 1 and out.info["mutual_attention_blocks"][0].startswith("up_blocks.1.")
    fixed = xl_pipe(masked(), method="dragdiffusion", progress=False, feature_block=2, **FAST)
    assert fixed.params["feature_block"] == 2 and "feature_block" not in fixed.info["adapted_to_model"]  # a user's
    src, res = np.asarray(masked().image), np.asarray(out.image)
    outside = ~masked().mask
    assert np.array_equal(src[outside], res[outside])


@pytest.mark.slow
def test_the_sdxl_working_width_is_its_own(xl_pipe):
    out = xl_pipe(masked(), method="fastdrag", progress=False, lora="none")
    assert out.info["adapted_to_model"]["resize_width"] == {"preset": 512, "used": 256}  # 512 is SD 1.5's 512 px
    assert out.info["working_size"] == [256, 216]  # (80/96 of 256, rounded to a multiple of 8)


@pytest.mark.slow
def test_the_sdxl_lora_is_cached_the_sdxl_way_and_read_back(xl_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path))
    kw = dict(FAST, lora="train", lora_steps=2, drag_steps=2, source_cache=False)  # the LoRA alone is reused
    first = xl_pipe(masked(), progress=False, **kw)
    assert first.info["lora"] == "trained" and first.info["lora_cache"]
    again = xl_pipe(masked(), progress=False, **kw)
    assert again.info["lora"] == "cached" and again.image.tobytes() == first.image.tobytes()
    assert not any("lora" in n for n, _ in xl_pipe.unet.named_parameters())  # removed after the edit
    from diffusers import StableDiffusionXLPipeline

    state, _ = StableDiffusionXLPipeline.lora_state_dict(first.info["lora_cache"])
    assert state and all(k.startswith("unet.") for k in state)


def test_single_file_checkpoints_are_told_apart_by_their_weights(tmp_path):
    from safetensors.torch import save_file

    from dragkit import DragDiffusionPipeline
    from dragkit.pipelines.diffusion import single_file_family

    one = torch.zeros(1)
    base = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
    refiner = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
    v1 = "model.diffusion_model.output_blocks.11.0.skip_connection.weight"
    for name, key in (("my-sd15-model", base), ("sdxl_base", v1), ("r", refiner)):  # never by the file's name
        save_file({key: one}, tmp_path / f"{name}.safetensors")
    assert single_file_family(tmp_path / "my-sd15-model.safetensors") == "sdxl"
    assert single_file_family(tmp_path / "sdxl_base.safetensors") == "sd"
    torch.save({"state_dict": {base: one}}, tmp_path / "c.ckpt")
    assert single_file_family(tmp_path / "c.ckpt") == "sdxl"
    with pytest.raises(ModelError, match="is an SDXL refiner"):
        DragDiffusionPipeline.from_pretrained(tmp_path / "r.safetensors")


def _as_v_prediction(pipe):
    """The same network answering in v (``v = (ε − √(1−ᾱ)·x_t)/√ᾱ``) under a v-prediction scheduler: a v-model
    whose predictions are exactly the ε-model's, so every edit must come out the same."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from dragkit import DragDiffusionPipeline

    alphas = pipe.scheduler.alphas_cumprod

    class VUNet(UNet2DConditionModel):
        def forward(self, sample, timestep, *args, return_dict=True, **kw):
            eps = super().forward(sample, timestep, *args, return_dict=False, **kw)[0]
            a = alphas[torch.as_tensor(timestep).long().reshape(-1)].to(sample).reshape(-1, 1, 1, 1)
            return ((eps - (1 - a).sqrt() * sample) / a.sqrt(),)

    unet = VUNet.from_config(pipe.unet.config)
    unet.load_state_dict(pipe.unet.state_dict())
    kind = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    v = DragDiffusionPipeline(
        unet=unet, scheduler=kind, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    v.set_progress_bar_config(disable=True)
    return v


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dragdiffusion", "luciddrag", "fastdrag"])
def test_an_equivalent_v_model_makes_the_same_edit(pipe, method, monkeypatch):
    """The drag loop's mask term (the scheduler's x0), sampling and LucidDrag's guidance (a shift of ε, applied in
    v) all read the prediction type: an ε-model and the v-model with the same predictions agree; the v-model read
    as if it predicted ε does not. Both start from the same inverted latent: diffusers' inverse DDIM converts a
    v-prediction with the lower timestep's ᾱ (the level the latent is at), so the two inversions are two
    different approximations; that the inversion reads the prediction type is the next test."""
    v = _as_v_prediction(pipe)
    monkeypatch.setattr(v.engine, "invert", pipe.engine.invert)
    kw = dict(FAST, mutual_attn_start_layer=4, lam=0.5, guide_quality=0)
    pipe.clear_source_cache()
    eps = pipe(masked(), method=method, progress=False, **kw)
    same = v(masked(), method=method, progress=False, **kw)
    assert same.info["prediction_type"] == "v_prediction"
    a, b = (np.asarray(r.image, np.int16) for r in (eps, same))
    assert np.abs(a - b).max() <= 2
    assert [s["handles"] for s in eps.trajectory] == [s["handles"] for s in same.trajectory]
    v.scheduler.register_to_config(prediction_type="epsilon")  # the v-model read as an ε-model
    v.clear_source_cache()
    wrong = np.asarray(v(masked(), method=method, progress=False, **kw).image, np.int16)
    assert np.abs(a - wrong).mean() > 10 * max(np.abs(a - b).mean(), 0.1)


@torch.no_grad()
def test_a_v_prediction_checkpoint_inverts_and_samples_in_v(tiny_sd2_v):
    from dragkit import DragDiffusionPipeline

    v = DragDiffusionPipeline.from_pretrained(tiny_sd2_v)
    v.set_progress_bar_config(disable=True)
    assert v.scheduler.config.prediction_type == v.inverse_scheduler.config.prediction_type == "v_prediction"
    engine = v.engine
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = engine.encode_prompt("a photo")
    zt = engine.invert(z0, cond, 10, 3, progress=False)
    engine.timesteps(10)
    _, back = engine.denoise(zt, cond, 7, progress=False)
    err = (back - z0).abs().mean()
    v.inverse_scheduler.register_to_config(prediction_type="epsilon")  # inverting as if it predicted ε
    try:
        wrong = engine.denoise(engine.invert(z0, cond, 10, 3, progress=False), cond, 7, progress=False)[1]
    finally:
        v.inverse_scheduler.register_to_config(prediction_type="v_prediction")
    assert err < 0.75 * (wrong - z0).abs().mean()  # the round trip is closer read as v (random weights: not exact)


def _cli(*args):
    from dragkit.interfaces.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_sdxl", "tiny_sd2_v"])
def test_every_diffusion_preset_through_the_command_line(model, request, tmp_path, face_png, capsys):
    from dragkit.utils.testing import build_tiny_clip

    folder = request.getfixturevalue(model)
    clip = build_tiny_clip(tmp_path / "clip")
    family, kind = ("sdxl", "epsilon") if model == "tiny_sdxl" else ("sd", "v_prediction")
    for method in PRESETS:
        out = tmp_path / f"{method}.png"
        sets = ["resize_width=0", "drag_steps=3", "lora_steps=2", "inference_steps=10"]
        sets += {"clipdrag": [f"clip_model={clip}"], "adaptivedrag": ["adaptive_step_cap=6"]}.get(method, [])
        sets += {"luciddrag": ["discriminator_steps=2"], "gooddrag": ["drag_phases=2"]}.get(method, [])
        args = ["edit", face_png, "--method", method, "--model", folder, "--drag", "20,30:28,30", "--mask", "auto"]
        args += ["--vae", folder] if method == "dragkit" else []  # a VAE of one's choice (here the model's own)
        code = _cli(*args, "--prompt", "a face", "-o", out, "-q", *[x for s in sets for x in ("--set", s)])
        assert code == 0, (method, capsys.readouterr().err)
        rec = json.loads(out.with_suffix(".json").read_text())
        assert rec["method"] == method and out.is_file()
        assert rec["info"]["model_family"] == family and rec["info"]["prediction_type"] == kind
    capsys.readouterr()
    code = _cli("edit", face_png, "--model", folder, "--vae", tmp_path / "nowhere", "--method", "fastdrag", "-q",
                "--drag", "20,30:28,30", "-o", tmp_path / "x.png")  # fmt: skip
    assert code == 2 and "cannot load VAE" in capsys.readouterr().err


@pytest.mark.slow
def test_the_memory_options_change_no_numbers_and_are_undone(xl_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path))
    kw = dict(FAST, lora="train", lora_steps=2, drag_steps=2, source_cache=False)
    plain = xl_pipe(masked(), progress=False, **kw)
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path / "other"))  # train again, with checkpointing
    saving = xl_pipe(masked(), progress=False, grad_checkpointing=True, vae_tiling=True, **kw)
    assert saving.info["lora"] == "trained" and saving.params["vae_tiling"] is True
    a, b = (np.asarray(r.image, np.int16) for r in (plain, saving))
    assert np.abs(a - b).max() <= 1
    assert not xl_pipe.vae.use_tiling and not xl_pipe.unet.is_gradient_checkpointing  # as they were
