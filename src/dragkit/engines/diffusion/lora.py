"""DragDiffusion's identity LoRA (Shi et al. 2024, §3.2), through peft: trained on the input image as the adapter
``dragkit_identity`` in every attention projection, cached on disk by (model, image, prompt, settings) and written
atomically, loaded from a user's file, and always removed after an edit (a user's own adapters stay)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ...core.errors import InputError, ModelError
from ...core.params import Param, register
from ...core.progress import progress_bar
from .features import expand_cond

logger = logging.getLogger(__name__)

register(
    Param(
        "lora",
        str,
        "train",
        "identity LoRA: none, train (cached on disk), or a path to saved LoRA weights",
        "engine:diffusion",
        group="lora",
        common=True,
    ),
    Param("lora_steps", int, 80, "identity LoRA: training steps", "engine:diffusion", min=1, group="lora"),
    Param("lora_rank", int, 16, "identity LoRA: rank (and alpha)", "engine:diffusion", min=1, group="lora"),
    Param(
        "lora_lr",
        float,
        5e-4,
        "identity LoRA: AdamW learning rate",
        "engine:diffusion",
        min=0,
        min_exclusive=True,
        group="lora",
    ),
    Param(
        "lora_batch",
        int,
        4,
        "identity LoRA: batch size (copies of the image latent)",
        "engine:diffusion",
        min=1,
        group="lora",
    ),
)

LORA_ADAPTER = "dragkit_identity"


def lora_cache_dir() -> Path:
    """Where trained identity LoRAs are cached: ``$DRAGKIT_CACHE/lora`` or ``~/.cache/dragkit/lora``."""
    root = os.environ.get("DRAGKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dragkit")
    return Path(root) / "lora"


def lora_cache_key(model: str, image_png: bytes, prompt: str, settings: dict[str, Any]) -> str:
    """SHA-256 of (model, image bytes, prompt, LoRA settings): a second edit of the same image reuses its LoRA."""
    h = hashlib.sha256()
    for part in (model.encode(), image_png, prompt.encode(), json.dumps(settings, sort_keys=True).encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:32]


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def add_identity_lora(unet: torch.nn.Module, rank: int, seed: int = 0) -> None:
    """Inject the ``dragkit_identity`` adapter (rank = alpha, DragDiffusion's Gaussian-A / zero-B start) into every
    attention projection through peft; works for ``UNet2DConditionModel`` and ``UNet2DModel`` alike. The Gaussian
    start is drawn from ``seed`` (peft draws from the global generator, which would make the LoRA, and so the edit,
    depend on whatever ran before); the global generator is left as it was."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, unet, adapter_name=LORA_ADAPTER)


def identity_lora_state_dict(unet: torch.nn.Module) -> dict[str, Tensor]:
    """The adapter's weights in diffusers' format (what ``save_lora_weights`` writes under ``unet.``)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=LORA_ADAPTER))


def load_identity_lora(unet: torch.nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Inject an adapter shaped like ``state_dict`` (diffusers' ``unet.``-prefixed LoRA format) and load it.

    Raises ``ValueError`` when the weights do not fit this UNet (other modules or other shapes)."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    sd = {k.removeprefix("unet."): v for k, v in state_dict.items() if not k.startswith("text_encoder.")}
    if not sd:
        raise ValueError("no UNet LoRA weights in the file")
    sd = convert_unet_state_dict_to_peft(sd)
    ranks = {v.shape[0] for k, v in sd.items() if "lora_A" in k}
    if len(ranks) != 1:
        raise ValueError(f"expected one LoRA rank, found {sorted(ranks)}")
    add_identity_lora(unet, ranks.pop())
    try:
        result = set_peft_model_state_dict(unet, sd, adapter_name=LORA_ADAPTER)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(str(e).strip().splitlines()[0]) from None
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{len(unexpected)} weights name modules this UNet does not have, e.g. {unexpected[0]}")


def remove_identity_lora(unet: torch.nn.Module) -> None:
    """Remove the identity adapter. Without other adapters the peft layers go too (the UNet is exactly as loaded);
    a user's own adapters (diffusers' ``peft_config``) stay."""
    from diffusers.utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    config = getattr(unet, "peft_config", None) or {}
    config.pop(LORA_ADAPTER, None)
    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    if not config:
        if layers:
            recurse_remove_peft_layers(unet)
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            unet.__dict__.pop(attr, None)
        return
    for m in layers:
        if LORA_ADAPTER in m.lora_A:
            m.delete_adapter(LORA_ADAPTER)


def train_identity_lora(
    unet: torch.nn.Module,
    scheduler: Any,
    sample_x0: Callable[[torch.Generator], Tensor],
    cond: dict[str, Any],
    *,
    steps: int,
    rank: int,
    lr: float,
    batch: int,
    seed: int,
    progress: bool = True,
    cancel: Callable[[], bool] | None = None,
) -> int:
    """Train DragDiffusion's identity LoRA into ``unet`` as the peft adapter ``dragkit_identity``; returns the
    number of steps done (fewer than ``steps`` when ``cancel``, polled once per step, returned True).

    Rank ``rank`` (alpha = rank) on ``to_q/to_k/to_v/to_out.0`` of every attention; AdamW (torch defaults, as
    theirs: betas 0.9/0.999, weight decay 0.01); ε-MSE (or the scheduler's v target) at uniform random
    timesteps on ``batch`` draws of the image's posterior (the image itself for pixel models), conditioned on the
    prompt through ``cond`` (Shi et al. 2024, §3.2). Only the adapter trains.
    """
    add_identity_lora(unet, rank, seed)
    params = [p for n, p in unet.named_parameters() if LORA_ADAPTER in n]
    for p in params:
        p.requires_grad_(True)
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    device = next(unet.parameters()).device
    dtype = unet.dtype
    T = scheduler.config.num_train_timesteps
    was_training = unet.training
    done = 0
    unet.train()
    base = [p for n, p in unet.named_parameters() if LORA_ADAPTER not in n and p.requires_grad]
    for p in base:  # as DragDiffusion's trainer: the base weights are frozen, only their gradients skipped
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in progress_bar(range(steps), desc="identity LoRA", disable=None if progress else True, leave=False):
                if cancel is not None and cancel():
                    break
                done += 1
                x0 = torch.cat([sample_x0(g) for _ in range(batch)]).to(device)
                noise = torch.randn(x0.shape, generator=g).to(device)
                t = torch.randint(0, T, (batch,), generator=g).to(device)
                noisy = scheduler.add_noise(x0, noise, t)
                target = (
                    noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
                )
                kw = expand_cond(cond, batch)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    pred = unet(noisy.to(dtype), t, **kw).sample
                loss = F.mse_loss(pred.float(), target.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        unet.train(was_training)
        for p in base:
            p.requires_grad_(True)
        for p in params:
            p.requires_grad_(False)
            p.data = p.data.to(dtype)
    return done


def _lora_loader(unet: torch.nn.Module) -> Any:
    """diffusers' LoRA loader for this UNet's family (SDXL's when its UNet takes the ``text_time`` conditioning,
    else Stable Diffusion's): its class methods read and write the standard LoRA files, and read other trainers'
    formats (kohya's) the way that family's pipelines do."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        return StableDiffusionXLLoraLoaderMixin
    return StableDiffusionLoraLoaderMixin


def load_lora_file(unet: torch.nn.Module, path: Path) -> None:
    """Inject a LoRA saved in diffusers' format (a folder or a ``.safetensors`` file) as the identity adapter."""
    state_dict, _alphas = _lora_loader(unet).lora_state_dict(str(path))
    load_identity_lora(unet, state_dict)


def prepare_identity_lora(
    unet: torch.nn.Module,
    scheduler: Any,
    model_name: str,
    mode: str,
    params: dict[str, Any],
    image: Image.Image,
    prompt: str,
    seed: int,
    size: tuple[int, int],
    sample_x0: Callable[[torch.Generator], Tensor],
    cond: dict[str, Tensor],
    *,
    progress: bool = True,
    cache: bool = True,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Put the identity LoRA in place (``mode``: ``none``, ``train`` — reused from the cache when there — or a path
    to saved weights) and return the facts the result reports. ``cache=False`` trains every time and writes
    nothing. A cancel ends the training early: that LoRA is used for this edit but never cached."""
    if mode == "none":
        return {"lora": "none"}
    if mode != "train":
        path = Path(mode)
        if not path.exists():
            raise InputError(f"LoRA path {mode} does not exist (use lora=none, lora=train or a saved LoRA)")
        try:
            load_lora_file(unet, path)
        except Exception as e:  # a LoRA that does not fit this UNet is a user-facing error
            remove_identity_lora(unet)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"LoRA {mode} does not fit this model's UNet: {first}") from None
        return {"lora": str(path)}
    settings = {k: params[k] for k in ("lora_steps", "lora_rank", "lora_lr", "lora_batch")}
    settings |= {"seed": seed, "size": list(size), "dtype": str(unet.dtype)}
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    folder = lora_cache_dir() / lora_cache_key(model_name, buf.getvalue(), prompt, settings)
    if cache and (folder / "pytorch_lora_weights.safetensors").is_file():
        load_lora_file(unet, folder)
        return {"lora": "cached", "lora_cache": str(folder)}

    done = train_identity_lora(
        unet,
        scheduler,
        sample_x0,
        cond,
        steps=params["lora_steps"],
        rank=params["lora_rank"],
        lr=params["lora_lr"],
        batch=params["lora_batch"],
        seed=seed,
        progress=progress,
        cancel=cancel,
    )
    if done < params["lora_steps"]:
        stopped = f"cancelled after {done} of {params['lora_steps']} steps"
        return {"lora": "trained", "lora_cache": None, "lora_stopped": stopped}
    if not cache:
        return {"lora": "trained", "lora_cache": None}
    return {"lora": "trained", "lora_cache": _write_cache(folder, unet)}


def _write_cache(folder: Path, unet: torch.nn.Module) -> str | None:
    """Save the trained adapter under a temporary name and rename it into place, so that a crash never leaves a
    half-written LoRA in the cache; ``None`` when the cache cannot be written (the edit goes on)."""
    tmp = folder.with_name(folder.name + f".part{time.monotonic_ns()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        loader = _lora_loader(unet)
        loader.save_lora_weights(str(tmp), unet_lora_layers=identity_lora_state_dict(unet), safe_serialization=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        logger.warning("identity LoRA trained but not cached (%s): set DRAGKIT_CACHE to a writable folder", e)
        return None
    try:
        tmp.rename(folder)
    except OSError:  # another process cached the same LoRA meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)
