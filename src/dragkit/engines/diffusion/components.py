"""The pieces of a model the engine is built from: the text conditioning's shape (:class:`PromptEmbeds`), an image's
latent (:class:`Posterior`), the model's family read from its configs, DragDiffusion's DDIM pair, and the context
managers that switch a UNet's gradients and checkpointing for a block and always restore them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .sampling import aligned_inverse_scheduler


@contextlib.contextmanager
def weights_require_grad(module: torch.nn.Module, on: bool) -> Iterator[None]:
    """Every parameter's ``requires_grad`` set to ``on`` for the block, each flag restored after (even on error).
    ``on=False``: a backward pass computes only the gradients it is asked for (the latent's), not the weights'."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in saved:
        p.requires_grad_(on)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@contextlib.contextmanager
def gradient_checkpointing(unet: torch.nn.Module, on: bool) -> Iterator[None]:
    """diffusers' gradient checkpointing for the block (activations recomputed in the backward pass)."""
    was = bool(getattr(unet, "is_gradient_checkpointing", False))
    if on and not was:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if on and not was:
            unet.disable_gradient_checkpointing()


@dataclass
class PromptEmbeds:
    """SDXL's text conditioning: ``hidden`` (both encoders' penultimate hidden states side by side, ``(1, 77, d)``),
    ``pooled`` (the second encoder's projected embedding) and ``time_ids`` (original size, crop corner and target
    size, each ``(height, width)``). SD 1.x/2.x need only a hidden-state tensor."""

    hidden: Tensor
    pooled: Tensor
    time_ids: Tensor

    def cond(self, batch: int) -> dict[str, Any]:
        return {
            "encoder_hidden_states": self.hidden.expand(batch, -1, -1),
            "added_cond_kwargs": {
                "text_embeds": self.pooled.expand(batch, -1),
                "time_ids": self.time_ids.expand(batch, -1),
            },
        }


Embeds = Tensor | PromptEmbeds | None


def model_family(unet: torch.nn.Module, vae: torch.nn.Module | None) -> str:
    """``sdxl``, ``sd`` (1.x/2.x) or ``pixel``, read from the checkpoint's own configs, never from its name: SDXL's
    UNet takes the ``text_time`` added conditioning; a latent model without it is SD 1.x/2.x."""
    if vae is None:
        return "pixel"
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        return "sdxl"
    return "sd"


@dataclass
class Posterior:
    """An image's latent: ``mean`` (× the VAE's scaling factor; DragDiffusion edits it) and ``sample(g)``, a draw
    from the VAE's posterior (the identity LoRA trains on those). For pixel-space models both are the image."""

    mean: Tensor
    sample: Callable[[torch.Generator], Tensor]


def ddim_schedulers(scheduler: Any, inverse: Any = None) -> tuple[Any, Any]:
    """DragDiffusion's DDIM, whatever scheduler a checkpoint ships (no clipping of x0: inversion is only exact
    without it; alphas start at ᾱ₀), and a ``DDIMInverseScheduler`` whose timesteps mirror it."""
    from diffusers import DDIMScheduler

    forward = DDIMScheduler.from_config(
        scheduler.config, clip_sample=False, set_alpha_to_one=False, steps_offset=scheduler.config.steps_offset
    )
    return forward, inverse if inverse is not None else aligned_inverse_scheduler(forward)
