"""UNet features through forward hooks: the output of ``unet.up_blocks[i]`` with its graph back to the latent, the
forward stopped (by an exception raised from the last hook) when the noise prediction is not needed, and the
feature function the drag loop calls at one timestep (DragDiffusion, Shi et al. 2024, §3.3) — of the latent, or of
the UNet's bottleneck (the mid block's output, replaced through a forward hook: DragNoise, Liu et al. 2024)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import ParameterError
from ...core.protocols import FeatureFn, FeatureOutput


class _FeaturesReady(Exception):
    """Raised by the last feature hook to stop the UNet forward once the features are captured."""


@dataclass
class UNetOutput:
    features: dict[int, Tensor]
    eps: Tensor | None


def expand_cond(cond: dict[str, Any], batch: int) -> dict[str, Any]:
    """A batch-1 conditioning dict (nested ``added_cond_kwargs`` included) for ``batch`` copies."""
    return {
        k: expand_cond(v, batch) if isinstance(v, dict) else v.expand(batch, *v.shape[1:]) for k, v in cond.items()
    }


def unet_forward(
    unet: torch.nn.Module,
    latent: Tensor,
    t: Tensor | int,
    cond: dict[str, Tensor],
    feature_blocks: Sequence[int] = (),
    need_eps: bool = True,
) -> UNetOutput:
    """One UNet call returning the outputs of ``up_blocks[i]`` for ``i`` in ``feature_blocks`` (graph kept) and,
    when ``need_eps``, the noise prediction. Without ``need_eps`` the forward stops right after the last wanted
    block. Hooks are removed in ``finally``. ``cond`` holds ``encoder_hidden_states`` for text-conditioned UNets
    and nothing for unconditional ones."""
    n = len(unet.up_blocks)
    for i in feature_blocks:
        if not 0 <= i < n:
            raise ParameterError(f"feature_block={i}: this UNet has up_blocks 0..{n - 1}")
    feats: dict[int, Tensor] = {}
    last = max(feature_blocks) if feature_blocks else None
    handles = []

    def hook_for(i: int) -> Callable:
        def hook(_module, _inputs, output):
            feats[i] = output
            if not need_eps and i == last:
                raise _FeaturesReady

        return hook

    for i in set(feature_blocks):
        handles.append(unet.up_blocks[i].register_forward_hook(hook_for(i)))
    eps = None
    try:
        eps = unet(latent, t, **cond, return_dict=False)[0]
    except _FeaturesReady:
        pass
    finally:
        for h in handles:
            h.remove()
    return UNetOutput(feats, eps)


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the ``autocast`` parameter (``none`` is a no-op)."""
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[mode])


def feature_function(
    unet: torch.nn.Module,
    scheduler: object,
    timestep: Tensor,
    cond: dict[str, Tensor],
    feature_block: int,
    grid: tuple[int, int],
    *,
    denoised: bool = False,
    decode: Callable[[Tensor], Tensor] | None = None,
    full: bool = False,
    autocast_mode: str = "none",
) -> FeatureFn:
    """The drag loop's feature function at ``timestep``: ``up_blocks[feature_block]``'s output resized bilinearly to
    the supervision ``grid``, and, when asked, what loss terms read: ``denoised`` (the scheduler's one-step denoise
    ``x_{t−1}``, for DragDiffusion's mask term) and ``decode`` (a decoder: the x0-prediction decoded to an image, for
    CLIP guidance). The UNet stops at the feature block unless one of those needs the noise prediction, or ``full``
    asks for the whole forward anyway (DragDiffusion's own code always runs it)."""
    need_eps = denoised or decode is not None or full
    device = next(unet.parameters()).device

    def features(latent: Tensor) -> FeatureOutput:
        with autocast(device, autocast_mode):
            out = unet_forward(unet, latent.to(unet.dtype), timestep, cond, [feature_block], need_eps=need_eps)
        f = F.interpolate(out.features[feature_block].float(), size=grid, mode="bilinear", align_corners=False)
        result = FeatureOutput(f)
        if need_eps:  # the scheduler's own step gives the previous latent and the x0-prediction
            prev, x0 = scheduler.step(out.eps.float(), timestep, latent.float(), return_dict=False)[:2]
            if denoised:
                result.denoised = prev
            if decode is not None:
                result.x0_image = decode(x0.to(unet.dtype))
        return result

    return features


@contextlib.contextmanager
def replaced_output(module: torch.nn.Module, value: Tensor) -> Iterator[None]:
    """While inside, ``module``'s output is ``value`` (expanded to the batch), whatever it computed: a forward hook
    that returns a value replaces the output. DragNoise's substituted bottleneck."""

    def hook(_module, _inputs, output):
        return value.to(output.dtype).expand(output.shape[0], *value.shape[1:])

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def mid_block_of(unet: torch.nn.Module) -> torch.nn.Module:
    """The UNet's mid block, or a one-line error for UNets distilled without one (BK-SDM small/tiny, segmind's)."""
    mid = getattr(unet, "mid_block", None)
    if mid is None:
        raise ParameterError(
            "sampler=bottleneck optimizes the UNet's mid-block output, and this UNet has no mid block (a distilled "
            "UNet such as BK-SDM small/tiny); use another method"
        )
    return mid


def bottleneck_function(
    unet: torch.nn.Module,
    scheduler: object,
    timestep: Tensor,
    cond: dict[str, Tensor],
    latent: Tensor,
    feature_block: int,
    grid: tuple[int, int],
    *,
    denoised: bool = False,
    decode: Callable[[Tensor], Tensor] | None = None,
    autocast_mode: str = "none",
) -> tuple[Tensor, FeatureFn]:
    """DragNoise's variable: the UNet's bottleneck (the mid block's output) at ``timestep`` on the fixed ``latent``.
    Returns the bottleneck the UNet computes there (the drag's start) and the feature function of a bottleneck:
    ``up_blocks[feature_block]``'s output on ``grid`` with the mid block's output replaced by it (the down path and
    its skip connections unchanged), and, when asked, the one-step denoise of ``latent`` with that noise prediction
    (``denoised``) and its decoded x0-prediction (``decode``)."""
    mid = mid_block_of(unet)
    device = next(unet.parameters()).device
    kept: list[Tensor] = []
    handle = mid.register_forward_hook(lambda _m, _i, output: kept.append(output.detach()))
    try:
        with torch.no_grad(), autocast(device, autocast_mode):
            unet_forward(unet, latent.to(unet.dtype), timestep, cond, [feature_block], need_eps=False)
    finally:
        handle.remove()
    need_eps = denoised or decode is not None

    def features(h: Tensor) -> FeatureOutput:
        with replaced_output(mid, h), autocast(device, autocast_mode):
            out = unet_forward(unet, latent.to(unet.dtype), timestep, cond, [feature_block], need_eps=need_eps)
        f = F.interpolate(out.features[feature_block].float(), size=grid, mode="bilinear", align_corners=False)
        result = FeatureOutput(f)
        if need_eps:
            prev, x0 = scheduler.step(out.eps.float(), timestep, latent.float(), return_dict=False)[:2]
            if denoised:
                result.denoised = prev
            if decode is not None:
                result.x0_image = decode(x0.to(unet.dtype))
        return result

    return kept[0].float(), features
