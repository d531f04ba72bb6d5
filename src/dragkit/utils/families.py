"""Tiny random-weight models built from the real configs of the checkpoints people use (tests and benchmarks only).

``../shared/data/model_configs/`` (or any folder laid out like it) holds the diffusers configs, without weights, of
SD 1.5, SD 2.1-base, SD 2.1 (768, v), SDXL base, the SD 1.5 and SDXL inpainting models, LCM Dreamshaper v7, the
distilled BK-SDM and segmind UNets and TAESD. :func:`build_family` builds a pipeline folder from one of them that
keeps **every flag and the scheduler** of the real checkpoint (block types, layers per block, transformer depths,
head counts, linear projections, attention upcasting, mid block or none, added conditioning, ``time_cond_proj_dim``,
input channels, VAE scaling and ``force_upcast``, text encoders' depth, heads and activation, the scheduler's class
and config verbatim) and reduces only the widths:

- UNet channels scaled by one factor, the smallest that keeps every block's width divisible by its head count
  (SD 1.5: 320/640/1280/1280 → 8/16/32/32; SD 2.x and SDXL, 5/10/20 heads: → 10/20/40/…); group norms use the
  largest of 8, 4, 2 groups that divides every width (the real 32 cannot divide widths this small);
- SDXL's size embedding 256 → 8 (its projection input follows: pooled text width + 6 × 8);
- VAE 128/256/512/512 → 8/16/32/32; TAESD's 64 → 8;
- text encoders: 2 channels per head (SD 1.5: 12 heads → 24), every layer kept, over a byte-level tokenizer of
  514 tokens (the real vocabulary files are not here).

The folder's ``model_index.json`` is the real one (the safety checker and feature extractor left out), so the
loading path is the one the real checkpoint takes. ``FAMILIES`` names each buildable family.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from .testing import _offline_clip_tokenizer

# family → (the folder whose model_index, scheduler, VAE and text encoders it takes, the UNet's config folder or None)
FAMILIES: dict[str, tuple[str, str | None]] = {
    "sd15": ("stable-diffusion-v1-5", None),
    "sd21-base": ("stable-diffusion-2-1-base", None),
    "sd21-v": ("stable-diffusion-2-1", None),
    "sdxl": ("stable-diffusion-xl-base-1.0", None),
    "sd15-inpaint": ("stable-diffusion-inpainting", None),
    "sdxl-inpaint": ("stable-diffusion-xl-1.0-inpainting-0.1", None),
    "lcm-dreamshaper-v7": ("LCM_Dreamshaper_v7", None),
    # BK-SDM's UNets were distilled from SD 1.4 (the other components unchanged: SD 1.5's configs are SD 1.4's)
    "bk-sdm-base": ("stable-diffusion-v1-5", "bk-sdm/bk_base/unet"),
    "bk-sdm-small": ("stable-diffusion-v1-5", "bk-sdm/bk_small/unet"),
    "bk-sdm-tiny": ("stable-diffusion-v1-5", "bk-sdm/bk_tiny/unet"),
    "bk-sdm-v2-small": ("stable-diffusion-2-1-base", "bk-sdm-v2-base/bk_small/unet"),
    "segmind-tiny-sd": ("stable-diffusion-v1-5", "segmind-tiny-sd/unet"),
}
_DROPPED = ("safety_checker", "feature_extractor", "image_encoder")
_TEXT_PER_HEAD = 2
_VAE_SCALE = 16  # 128 → 8
_EMA_KEYS = ("decay", "optimization_step", "inv_gamma", "min_decay", "power", "update_after_step", "use_ema_warmup")
_TIME_EMBED = 8  # SDXL's addition_time_embed_dim (256)


def _config(path: Path) -> dict[str, Any]:
    """A config file's values, without diffusers' bookkeeping keys."""
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def _per_block(value: Any, n: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _groups(widths: list[int]) -> int:
    return next(g for g in (8, 4, 2, 1) if all(w % g == 0 for w in widths))


def tiny_unet_config(real: dict[str, Any], cross_attention_dim: int, pooled: int | None = None) -> dict[str, Any]:
    """The real UNet config with only its widths reduced (the module docstring says how)."""
    cfg = copy.deepcopy(real)
    widths = list(cfg["block_out_channels"])
    heads = _per_block(cfg.get("num_attention_heads") or cfg["attention_head_dim"], len(widths))
    scale = next(
        s
        for s in range(8, widths[0] + 1)
        if all(w * s % widths[0] == 0 and (w * s // widths[0]) % h == 0 for w, h in zip(widths, heads, strict=True))
    )
    cfg["block_out_channels"] = [w * scale // widths[0] for w in widths]
    cfg["norm_num_groups"] = _groups(cfg["block_out_channels"])
    cfg["cross_attention_dim"] = cross_attention_dim
    if cfg.get("addition_embed_type") == "text_time":
        cfg["addition_time_embed_dim"] = _TIME_EMBED
        cfg["projection_class_embeddings_input_dim"] = pooled + 6 * _TIME_EMBED
    for key in _EMA_KEYS:  # EMA bookkeeping some hub configs carry (SDXL inpainting)
        cfg.pop(key, None)
    return cfg


def tiny_vae_config(real: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(real)
    cfg["block_out_channels"] = [max(1, w // _VAE_SCALE) for w in cfg["block_out_channels"]]
    cfg["norm_num_groups"] = _groups(cfg["block_out_channels"])
    return cfg


def _text_encoder(real: dict[str, Any], tokenizer: Any, cls: Any) -> Any:
    """The real text tower's depth, heads and activation at 2 channels per head, over the offline tokenizer."""
    from transformers import CLIPTextConfig

    heads = real["num_attention_heads"]
    hidden = _TEXT_PER_HEAD * heads
    keep = {k: real[k] for k in ("hidden_act", "num_hidden_layers", "layer_norm_eps") if k in real}
    extra = {"projection_dim": hidden} if "projection_dim" in real else {}
    config = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=heads,
        vocab_size=len(tokenizer),
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        max_position_embeddings=real.get("max_position_embeddings", 77),
        **keep,
        **extra,
    )
    return cls(config)


def build_family(family: str, folder: str | Path, configs: str | Path, seed: int = 0) -> Path:
    """Build and save the tiny random-weight pipeline folder of ``family`` (a key of ``FAMILIES``) from the real
    configs under ``configs``; returns ``folder``."""
    import diffusers
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")
    base, unet_dir = FAMILIES[family]
    configs, folder = Path(configs), Path(folder)
    root = configs / base
    index = json.loads((root / "model_index.json").read_text())
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    widths: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer", "tokenizer_2"):
            if name in index:
                _offline_clip_tokenizer(Path(tmp) / name).save_pretrained(folder / name)
        for name in ("text_encoder", "text_encoder_2"):
            if name not in index:
                continue
            real = _config(root / name / "config.json")
            cls = getattr(transformers, index[name][1])
            tok = transformers.CLIPTokenizer.from_pretrained(folder / name.replace("text_encoder", "tokenizer"))
            encoder = _text_encoder(real, tok, cls)
            encoder.save_pretrained(folder / name)
            widths.append(encoder.config.hidden_size)
    unet_real = _config(configs / unet_dir / "config.json" if unet_dir else root / "unet" / "config.json")
    unet_cfg = tiny_unet_config(unet_real, sum(widths), pooled=widths[-1])
    diffusers.UNet2DConditionModel.from_config(unet_cfg).save_pretrained(folder / "unet")
    vae_cls = getattr(diffusers, index["vae"][1])
    vae_cls.from_config(tiny_vae_config(_config(root / "vae" / "config.json"))).save_pretrained(folder / "vae")
    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    scheduler_cls.from_config(_config(root / "scheduler" / "scheduler_config.json")).save_pretrained(
        folder / "scheduler"
    )
    index = {k: ([None, None] if k in _DROPPED else v) for k, v in index.items()}
    if "requires_safety_checker" in index:
        index["requires_safety_checker"] = False
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def build_taesd(folder: str | Path, configs: str | Path, seed: int = 0) -> Path:
    """TAESD (``AutoencoderTiny``) from its real config, every block count kept, 64 channels → 8; random weights."""
    from diffusers import AutoencoderTiny

    cfg = _config(Path(configs) / "taesd" / "config.json")
    for key in ("encoder_block_out_channels", "decoder_block_out_channels"):
        cfg[key] = [max(1, w // 8) for w in cfg[key]]
    torch.manual_seed(seed)
    AutoencoderTiny.from_config(cfg).save_pretrained(Path(folder))
    return Path(folder)


def self_attention_layers(unet_config: dict[str, Any]) -> int:
    """How many self-attention layers (transformer blocks) a UNet config has, counted as diffusers builds them."""
    n = len(unet_config["block_out_channels"])
    lpb = _per_block(unet_config["layers_per_block"], n)
    depth = _per_block(unet_config.get("transformer_layers_per_block", 1), n)
    down = sum(lpb[i] * depth[i] for i, t in enumerate(unet_config["down_block_types"]) if "CrossAttn" in t)
    rdepth, rlpb = depth[::-1], lpb[::-1]
    up = sum((rlpb[i] + 1) * rdepth[i] for i, t in enumerate(unet_config["up_block_types"]) if "CrossAttn" in t)
    mid = depth[-1] if unet_config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn" else 0
    return down + mid + up


__all__ = ["FAMILIES", "build_family", "build_taesd", "self_attention_layers", "tiny_unet_config", "tiny_vae_config"]
