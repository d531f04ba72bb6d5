"""Every checkpoint family people use, as a tiny random-weight model built from its real config
(``dragkit.utils.families``; ``../shared/data/model_configs``), loads through the real path (a saved pipeline folder)
and edits with a diffusion preset; the presets rotate over the families so that each runs on one of them (the full
matrix, every preset on every family through the CLI, is ``scripts/families_check.py``: docs/model_families.md).
A UNet without a mid block refuses DragNoise in one line, an inpainting checkpoint every sampler but ``inpaint``,
and a plain checkpoint ``inpaint``; TAESD replaces a checkpoint's VAE through ``load_pipeline(vae=...)``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest

pytest.importorskip("diffusers")

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "model_configs"
pytestmark = [
    pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"the real model configs are not at {CONFIGS}"),
    pytest.mark.slow,
]
SHORT = dict(drag_steps=3, lora_steps=2, resize_width=0, drag_phases=2, inference_steps=10)
FLAGS = (
    "down_block_types",
    "up_block_types",
    "mid_block_type",
    "layers_per_block",
    "transformer_layers_per_block",
    "in_channels",
    "addition_embed_type",
    "time_cond_proj_dim",
    "use_linear_projection",
    "upcast_attention",
)
# family → the preset it runs here (every diffusion preset on at least one family)
ROTATION = {
    "sd15": "dragdiffusion",
    "sd21-base": "gooddrag",
    "sd21-v": "freedrag",
    "sdxl": "fastdrag",
    "sd15-inpaint": "inpaint4drag",
    "sdxl-inpaint": "inpaint4drag",
    "lcm-dreamshaper-v7": "regiondrag",
    "bk-sdm-base": "dragnoise",
    "bk-sdm-small": "stabledrag",
    "bk-sdm-tiny": "clipdrag",
    "bk-sdm-v2-small": "adaptivedrag",
    "segmind-tiny-sd": "dragkit",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family → its saved folder, and TAESD's (built on first use)."""
    from dragkit.utils.families import build_family, build_taesd

    root = tmp_path_factory.mktemp("families")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            build = build_taesd if family == "taesd" else lambda f, c: build_family(family, f, c)
            cache[family] = build(root / family, CONFIGS)
        return cache[family]

    return get


def request(mask: bool = True) -> DragRequest:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8))
    m = np.zeros((64, 64), bool)
    m[20:48, 24:52] = True
    return DragRequest(image, [(34, 30)], [(40, 26)], mask=m if mask else None, prompt="a photo", seed=0)


def test_every_diffusion_preset_is_in_the_rotation():
    from dragkit.methods import METHODS
    from dragkit.utils.families import FAMILIES

    assert set(ROTATION) == set(FAMILIES)
    assert {n for n, m in METHODS.items() if m.engine == "diffusion" and n != "luciddrag"} <= set(ROTATION.values())


@pytest.mark.parametrize("family", list(ROTATION))
def test_each_family_loads_and_edits(built, family):
    from dragkit.pipelines import load_pipeline
    from dragkit.utils.families import FAMILIES, self_attention_layers

    folder = built(family)
    pipe = load_pipeline("diffusion", str(folder), quiet=True)
    base, unet_dir = FAMILIES[family]
    real = json.loads((CONFIGS / (unet_dir or f"{base}/unet") / "config.json").read_text())
    for flag in FLAGS:  # the real checkpoint's layout and switches, only the widths reduced
        if flag in real:
            assert pipe.unet.config[flag] == real[flag], flag
    blocks = sum(1 for name, _ in pipe.unet.named_modules() if name.endswith(".attn1"))
    assert blocks == self_attention_layers(real)  # what docs/model_families.md counts
    method = ROTATION[family]
    extra = {}
    if method == "inpaint4drag":
        extra = dict(inpaint_lora="none", inpaint_vae=str(built("taesd")), inpaint_steps=2)
    result = pipe(request(), method=method, progress=False, **SHORT, **extra)
    assert result.image.size == (64, 64)
    scheduler = json.loads((CONFIGS / base / "scheduler" / "scheduler_config.json").read_text())
    if method != "inpaint4drag":  # the diffusers inpainting pipeline samples; the rest use the checkpoint's schedule
        assert result.info["prediction_type"] == scheduler.get("prediction_type", "epsilon")
    if method not in ("inpaint4drag", "regiondrag", "dragnoise"):  # the methods with mutual self-attention
        # the preset's SD 1.5 layers carried over to this UNet's up path (BK-SDM's 9 or 10 layers, SDXL's 70), the
        # finest up blocks for DragDiffusion's 10 and its kin: never an empty set past the UNet's last layer
        blocks = result.info["mutual_attention_blocks"]
        assert blocks and all(b.startswith("up_blocks.") for b in blocks), blocks
        if family.startswith(("bk-sdm", "segmind")) and method != "dragkit":
            n = len(pipe.unet.up_blocks)  # 4; BK-SDM tiny drops the deepest stage: 3
            assert {b.split(".")[1] for b in blocks} == {str(n - 2), str(n - 1)}, blocks


def test_the_wrong_checkpoint_for_a_sampler_is_one_line(built):
    from dragkit.core.errors import ParameterError
    from dragkit.pipelines import load_pipeline

    inpainting = load_pipeline("diffusion", str(built("sd15-inpaint")), quiet=True)
    with pytest.raises(ParameterError, match="inpainting checkpoint .* use --method inpaint4drag"):
        inpainting(request(), method="dragdiffusion", progress=False, **SHORT)
    plain = load_pipeline("diffusion", str(built("sd15")), quiet=True)
    with pytest.raises(ParameterError, match="needs an SD inpainting checkpoint"):
        plain(request(), method="inpaint4drag", progress=False, **SHORT)
    no_mid = load_pipeline("diffusion", str(built("bk-sdm-small")), quiet=True)
    with pytest.raises(ParameterError, match="no mid block"):
        no_mid(request(), method="dragnoise", progress=False, **SHORT)


def test_taesd_replaces_the_vae(built):
    """``--vae`` with a tiny autoencoder: the pipeline encodes (no posterior: its latents) and decodes with it."""
    from diffusers import AutoencoderTiny

    from dragkit.pipelines import load_pipeline

    pipe = load_pipeline("diffusion", str(built("sd15")), quiet=True, vae=str(built("taesd")))
    assert isinstance(pipe.vae, AutoencoderTiny)
    decoded = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z, *a, **kw: decoded.append(z.shape) or decode(z, *a, **kw)
    result = pipe(request(mask=False), method="fastdrag", progress=False, **SHORT)
    assert decoded and result.image.size == (64, 64)
    assert torch.is_tensor(pipe.engine.encode(pipe.engine.image_tensor(result.image, (64, 64))).mean)


def test_fastdrag_on_its_lcm_unet_with_the_guidance_embedding(built, tmp_path):
    """FastDrag's setting: SD 1.5's text encoder and VAE with LCM Dreamshaper v7's UNet (``--unet``). With
    ``lcm_guidance`` every UNet call gets diffusers' LCM guidance embedding of w as ``timestep_cond``; ``none``
    (FastDrag's code) feeds none; the result's JSON names the replaced UNet."""
    from diffusers import LatentConsistencyModelPipeline

    from dragkit.interfaces.cli import main

    lcm = built("lcm-dreamshaper-v7")
    image = tmp_path / "in.png"
    request().image.save(image)
    fed: list[torch.Tensor | None] = []

    from dragkit.pipelines import load_pipeline

    pipe = load_pipeline("diffusion", str(built("sd15")), quiet=True, unet=str(lcm))
    assert pipe.unet.config.time_cond_proj_dim == 256 and pipe.replaced == {"unet": str(lcm)}
    pipe.unet.register_forward_pre_hook(lambda m, a, kw: fed.append(kw.get("timestep_cond")), with_kwargs=True)
    with_w = pipe(request(mask=False), method="fastdrag", progress=False, lcm_guidance="7.5", **SHORT)
    expected = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.tensor([7.5]), 256)
    assert fed and all(t is not None and torch.equal(t[0], expected[0]) for t in fed)
    fed.clear()
    without = pipe(request(mask=False), method="fastdrag", progress=False, **SHORT)
    assert fed and all(t is None for t in fed)
    assert with_w.info["replaced"] == {"unet": str(lcm)}
    assert not np.array_equal(np.asarray(with_w.image), np.asarray(without.image))  # the embedding is read

    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as e:
        args = ["--model", str(built("sd15")), "--unet", str(lcm), "--method", "fastdrag", "--drag", "34,30:40,26"]
        main(["edit", str(image), *args, "--set", "lcm_guidance=7.5", "--set", "resize_width=0", "-o", str(out), "-q"])
    assert e.value.code == 0
    assert json.loads(out.with_suffix(".json").read_text())["info"]["replaced"] == {"unet": str(lcm)}


def test_a_unet_that_does_not_fit_or_has_no_guidance_embedding_is_one_line(built):
    from dragkit.core.errors import ModelError, ParameterError
    from dragkit.pipelines import load_pipeline

    with pytest.raises(ModelError, match="attends to .*-wide text"):
        load_pipeline("diffusion", str(built("sd15")), quiet=True, unet=str(built("sdxl")))
    with pytest.raises(ModelError, match="cannot load UNet"):
        load_pipeline("diffusion", str(built("sd15")), quiet=True, unet=str(built("taesd")))
    plain = load_pipeline("diffusion", str(built("sd15")), quiet=True)
    with pytest.raises(ParameterError, match="no guidance embedding"):
        plain(request(), method="fastdrag", progress=False, lcm_guidance="7.5", **SHORT)
    with pytest.raises(ParameterError, match="lcm_guidance='strong'"):
        plain(request(), method="fastdrag", progress=False, lcm_guidance="strong", **SHORT)
