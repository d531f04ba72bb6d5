"""Random-weight models built offline, for tests and benchmarks only (never for real edits).

``build_tiny_sd`` makes a complete Stable-Diffusion-layout pipeline folder (VAE, CLIP text encoder and
tokenizer, UNet, scheduler) small enough to run an edit in seconds on a CPU, and ``build_sd15_shaped`` the same
block structure as SD 1.5 at reduced width, for speed and memory measurements. Both save with
``save_pretrained`` so that the real loading code reads them back by path.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch


def _offline_clip_tokenizer(folder: Path):
    """A byte-level CLIP tokenizer with no merges: every character is a token (the hub's is not reachable)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to code points from 256 up.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_config(tokenizer, hidden: int, layers: int, heads: int, intermediate: int, **extra):
    """A CLIP text-tower config over the offline tokenizer (its special tokens, 77 positions)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        vocab_size=len(tokenizer),
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        max_position_embeddings=77,
        **extra,
    )


def _vae(channels: tuple[int, ...], norm_num_groups: int, **extra):
    """A Stable-Diffusion-layout ``AutoencoderKL`` (4 latent channels, downsampling by 2^(len(channels) − 1))."""
    from diffusers import AutoencoderKL

    m = len(channels)
    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * m,
        up_block_types=["UpDecoderBlock2D"] * m,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        **extra,
    )


def _sd_ddim(**extra):
    """Stable Diffusion's DDIM configuration (its betas, no clipping, ᾱ₀ not 1, steps offset 1), plus ``extra``."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        **extra,
    )


def build_sd_pipeline(
    folder: str | Path,
    *,
    unet_channels: tuple[int, ...] = (8, 8, 16, 16),
    vae_channels: tuple[int, ...] = (4, 8, 8, 8),
    text_hidden: int = 16,
    text_layers: int = 2,
    attention_head_dim: int | tuple[int, ...] = 2,
    layers_per_block: int = 1,
    norm_num_groups: int = 2,
    seed: int = 0,
    prediction_type: str = "epsilon",
    use_linear_projection: bool = False,
) -> Path:
    """Build and save a random-weight Stable-Diffusion-layout pipeline; returns the folder.

    The UNet has SD 1.5's block types (CrossAttnDown ×3, Down, mid, Up, CrossAttnUp ×3); the VAE downsamples by
    2^(len(vae_channels) − 1) (8 with four blocks, like SD). The scheduler is SD 1.5's DDIM configuration, with
    ``prediction_type`` (SD 2.x 768-v: ``v_prediction``; SD 2.x also uses ``use_linear_projection``).
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    n = len(unet_channels)
    unet = UNet2DConditionModel(
        block_out_channels=unet_channels,
        layers_per_block=layers_per_block,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=text_hidden,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        use_linear_projection=use_linear_projection,
    )
    vae = _vae(vae_channels, norm_num_groups)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _offline_clip_tokenizer(Path(tmp))
    text_encoder = CLIPTextModel(_text_config(tokenizer, text_hidden, text_layers, 2, 2 * text_hidden))
    scheduler = _sd_ddim(prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sd(folder: str | Path) -> Path:
    """The smallest useful SD-layout pipeline (about a second per edit on a CPU)."""
    return build_sd_pipeline(folder)


def build_tiny_sd2_v(folder: str | Path) -> Path:
    """The tiny SD layout as SD 2.x 768-v has it: v-prediction, linear projections in the transformers."""
    return build_sd_pipeline(folder, prediction_type="v_prediction", use_linear_projection=True)


def build_sdxl_pipeline(
    folder: str | Path,
    *,
    unet_channels: tuple[int, ...] = (8, 16, 16),
    transformer_layers: tuple[int, ...] = (1, 1, 2),
    vae_channels: tuple[int, ...] = (4, 8, 8, 8),
    text_hidden: tuple[int, int] = (8, 16),
    text_layers: int = 2,
    time_embed_dim: int = 4,
    attention_head_dim: int | tuple[int, ...] = 2,
    layers_per_block: int = 1,
    norm_num_groups: int = 2,
    sample_size: int = 128,
    seed: int = 0,
) -> Path:
    """Build and save a random-weight SDXL-layout pipeline (``StableDiffusionXLPipeline``); returns the folder.

    As SDXL: the UNet's blocks are Down, CrossAttnDown ×2 and CrossAttnUp ×2, Up, with ``transformer_layers`` per
    down block (SDXL: 0, 2, 10); its added conditioning is ``text_time`` (the pooled text embedding and six size
    numbers); cross-attention reads both text encoders' hidden states side by side (``CLIPTextModel`` and
    ``CLIPTextModelWithProjection``, penultimate layers); the VAE keeps ``force_upcast``; the scheduler is SDXL's
    DDIM configuration (ε-prediction, "leading" spacing)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    h1, h2 = text_hidden
    unet = UNet2DConditionModel(
        block_out_channels=unet_channels,
        layers_per_block=layers_per_block,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(unet_channels) - 1) + ("UpBlock2D",),
        transformer_layers_per_block=transformer_layers,
        cross_attention_dim=h1 + h2,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=h2 + 6 * time_embed_dim,
    )
    m = len(vae_channels)
    vae = _vae(
        vae_channels,
        norm_num_groups,
        scaling_factor=0.13025,
        force_upcast=True,
        sample_size=sample_size * 2 ** (m - 1),
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _offline_clip_tokenizer(Path(tmp) / "one")
        tokenizer_2 = _offline_clip_tokenizer(Path(tmp) / "two")
    text_encoder = CLIPTextModel(_text_config(tokenizer, h1, text_layers, 2, 2 * h1))
    text_encoder_2 = CLIPTextModelWithProjection(
        _text_config(tokenizer_2, h2, text_layers, 2, 2 * h2, projection_dim=h2)
    )
    scheduler = _sd_ddim(timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sdxl(folder: str | Path) -> Path:
    """The smallest useful SDXL-layout pipeline (seconds per edit on a CPU), trained size 256 (SDXL's: 1024)."""
    return build_sdxl_pipeline(folder, sample_size=32)


def build_sdxl_shaped(folder: str | Path, width: int = 64) -> Path:
    """SDXL's blocks, transformer depths (0, 2, 10) and heads at reduced width (``width`` replaces 320), SDXL's own
    VAE, random weights; for speed and memory measurements."""
    return build_sdxl_pipeline(
        folder,
        unet_channels=(width, 2 * width, 4 * width),
        transformer_layers=(1, 2, 10),
        vae_channels=(128, 256, 512, 512),  # SDXL's own VAE: its activations dominate encoding and decoding
        text_hidden=(96, 160),
        text_layers=4,
        time_embed_dim=32,
        attention_head_dim=(5, 10, 20) if width % 64 == 0 else 8,
        layers_per_block=2,
        norm_num_groups=32,
    )


def build_sd15_shaped(folder: str | Path, width: int = 64) -> Path:
    """SD 1.5's blocks, heads and VAE layout at reduced width (``width`` replaces 320), random weights; at
    ``width=320`` SD 1.5's own sizes, VAE and text encoder included."""
    full = width == 320
    return build_sd_pipeline(
        folder,
        unet_channels=(width, 2 * width, 4 * width, 4 * width),
        vae_channels=(128, 256, 512, 512) if full else (32, 64, 128, 128),
        text_hidden=768 if full else 128,
        text_layers=12 if full else 4,
        attention_head_dim=8,
        layers_per_block=2,
        norm_num_groups=32,
    )


# faces64's layout and schedule (scripts/train_faces64.py trains exactly this; the tiny test model shrinks it).
FACES64_UNET = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 128, 224),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
    attention_head_dim=32,
)
FACES64_SCHEDULE = dict(
    num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", clip_sample=False
)


def build_tiny_pixel(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random-weight unconditional pixel-space model: faces64's layout at a fraction of the width and
    resolution, saved as a ``DDPMPipeline`` folder."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    layout = {**FACES64_UNET, "sample_size": 32, "block_out_channels": (8, 8, 16, 16)}
    unet = UNet2DModel(**{**layout, "norm_num_groups": 4, "attention_head_dim": 8})
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**FACES64_SCHEDULE)).save_pretrained(folder)
    return Path(folder)


def build_clip(
    folder: str | Path,
    *,
    text: tuple[int, int, int] = (16, 2, 2),
    vision: tuple[int, int, int] = (16, 2, 2),
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 16,
    seed: int = 0,
) -> Path:
    """Build and save a random-weight CLIP (``text``/``vision``: hidden size, layers, heads) with its offline
    tokenizer and an image-processor config, loadable by ``CLIPModel.from_pretrained`` like a downloaded one."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = _offline_clip_tokenizer(folder / "_vocab")
    (th, tl, ta), (vh, vl, va) = text, vision
    text_config = _text_config(tokenizer, th, tl, ta, 4 * th, projection_dim=projection_dim)
    vision_config = CLIPVisionConfig(
        hidden_size=vh,
        intermediate_size=4 * vh,
        num_attention_heads=va,
        num_hidden_layers=vl,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=projection_dim,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=projection_dim
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = {  # written directly: instantiating CLIPImageProcessor wants torchvision
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return folder


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIP (32-px images, 16-d embeddings) for tests."""
    return build_clip(folder, seed=seed)


def build_clip_b16_shaped(folder: str | Path, seed: int = 0) -> Path:
    """A random-weight CLIP with ViT-B/16's shape (vision: 12 layers × 768, 224-px input, 16-px patches; text: 12
    layers × 512; 512-d embeddings), for cost measurements of CLIPDrag's guidance (the offline tokenizer's small
    vocabulary is the one difference: its embedding table is smaller than the real one's 49,408 rows)."""
    return build_clip(
        folder, text=(512, 12, 8), vision=(768, 12, 12), image_size=224, patch_size=16, projection_dim=512, seed=seed
    )
