"""The diffusion engine's pieces: DDIM inversion, UNet features through hooks, mutual self-attention, identity
LoRA (trained through peft, cached on disk), and the one-step denoise of DragDiffusion's mask term.

Everything goes through diffusers' public contracts: schedulers do the DDIM math (``DDIMInverseScheduler.step``,
``DDIMScheduler.step``), features come from ``register_forward_hook`` on ``unet.up_blocks[i]`` (the forward is
stopped by an exception once they are in hand), attention is customised with ``set_attn_processor`` and always
restored, LoRA lives in peft adapters that are always deleted after an edit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ...core.errors import ParameterError
from ...core.params import Param, register

logger = logging.getLogger(__name__)

register(
    Param(
        "inference_steps", int, 50, "diffusion: DDIM steps of the full schedule", "engine:diffusion", min=1, max=1000
    ),
    Param(
        "inversion_strength",
        float,
        0.7,
        "diffusion: fraction of the schedule inverted (the drag optimizes the latent there)",
        "engine:diffusion",
        min=0,
        max=1,
        min_exclusive=True,
    ),
    Param(
        "lora",
        str,
        "train",
        "identity LoRA: none, train (cached on disk), or a path to saved LoRA weights",
        "engine:diffusion",
    ),
    Param("lora_steps", int, 80, "identity LoRA: training steps", "engine:diffusion", min=1),
    Param("lora_rank", int, 16, "identity LoRA: rank (and alpha)", "engine:diffusion", min=1),
    Param("lora_lr", float, 5e-4, "identity LoRA: AdamW learning rate", "engine:diffusion", min=0, min_exclusive=True),
    Param("lora_batch", int, 4, "identity LoRA: batch size (copies of the image latent)", "engine:diffusion", min=1),
    Param(
        "mutual_attn_start_layer",
        int,
        10,
        "diffusion: first transformer block (execution order: down, mid, up) whose self-attention uses the source "
        "branch's K/V while sampling",
        "engine:diffusion",
        min=0,
    ),
    Param(
        "source_kv",
        str,
        "recompute",
        "sampling: where the edited branch's mutual self-attention reads the source's keys/values. recompute: "
        "denoise the source branch alongside (DragDiffusion, exact); inversion: reuse the layer inputs recorded "
        "while inverting at the same timestep and denoise the edited branch alone (about half the sampling time; "
        "an approximation, measured in docs/speed.md)",
        "engine:diffusion",
        choices=("recompute", "inversion"),
    ),
    Param(
        "source_cache",
        bool,
        True,
        "diffusion: keep the last source's inverted latent and its source branch's inputs to the mutual layers in "
        "memory (one image per pipeline); a later edit of the same image with the same prompt, LoRA and schedule "
        "skips inversion and denoises the edited branch alone (exact: the source branch never reads the edit). "
        "Costs the mutual layers' inputs for every sampling step (about 1 GB for SD 1.5 at 512x512)",
        "engine:diffusion",
    ),
    Param(
        "autocast",
        str,
        "none",
        "diffusion: mixed precision for the UNet calls of inversion, drag and sampling (none, bf16, fp16); changes "
        "the numbers, see docs/speed.md",
        "engine:diffusion",
        choices=("none", "bf16", "fp16"),
    ),
    Param(
        "grad_checkpointing",
        bool,
        False,
        "drag: recompute the UNet's activations in the backward pass instead of keeping them (less memory, more "
        "time; same numbers)",
        "engine:diffusion",
    ),
    Param(
        "channels_last",
        bool,
        False,
        "diffusion: run the UNet's convolutions in channels-last memory layout (a speed option on some GPUs)",
        "engine:diffusion",
    ),
    Param(
        "resize_width",
        int,
        512,
        "diffusion: resize the image to this width (aspect kept, sides rounded to multiples of 8); 0 = keep its "
        "width. Pixel-space models always work at their own resolution",
        "engine:diffusion",
        min=0,
    ),
)

LORA_ADAPTER = "dragkit_identity"


def inversion_step_count(strength: float, steps: int) -> int:
    """DragDiffusion's ``round(strength · N)`` (Python's banker's rounding), at least 1."""
    n = round(strength * steps)
    if n < 1:
        raise ParameterError(f"inversion_strength={strength} of inference_steps={steps} inverts no step")
    return n


def aligned_inverse_scheduler(scheduler: Any) -> Any:
    """A ``DDIMInverseScheduler`` mirroring ``scheduler``'s timesteps (``steps_offset`` passed explicitly, since
    ``from_config`` can drop a patched value; see WORKPLACE.md)."""
    from diffusers import DDIMInverseScheduler

    return DDIMInverseScheduler.from_config(scheduler.config, steps_offset=scheduler.config.steps_offset)


def check_alignment(scheduler: Any, inverse: Any, steps: int) -> None:
    scheduler.set_timesteps(steps)
    inverse.set_timesteps(steps)
    if not torch.equal(inverse.timesteps.flip(0).cpu(), scheduler.timesteps.cpu()):
        raise RuntimeError(
            "inverse DDIM timesteps do not mirror the forward ones: "
            f"{inverse.timesteps[:3].tolist()}... vs {scheduler.timesteps[-3:].tolist()}"
        )


class _FeaturesReady(Exception):
    """Raised by the last feature hook to stop the UNet forward once the features are captured."""


@dataclass
class UNetOutput:
    features: dict[int, Tensor]
    eps: Tensor | None


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


def attention_modules(unet: torch.nn.Module) -> dict[str, Any]:
    """Every diffusers ``Attention`` module of a UNet by module path (text-conditioned or not)."""
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}


def self_attentions(unet: torch.nn.Module) -> list[str]:
    """Module paths of every self-attention, in execution order (down blocks, mid block, up blocks): ``attn1`` of
    each transformer block in text-conditioned UNets, the spatial attention blocks of ``UNet2DModel``s."""
    section = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}

    def order(name: str) -> tuple:
        head = name.split(".")[0]
        nums = [int(x) for x in re.findall(r"\.(\d+)(?=\.|$)", name)]
        return (section.get(head, 3), *nums)

    names = [n for n, m in attention_modules(unet).items() if not m.is_cross_attention]
    return sorted(names, key=order)


class MutualSelfAttentionProcessor:
    """Mutual self-attention (MasaCtrl, Cao et al. 2023), DragDiffusion's reference-latent control.

    The batch is ``[source, edited]`` (each half may hold several samples); every query attends to the keys and
    values computed from the **source** half. The source half therefore computes exactly its ordinary
    self-attention, and the edited half borrows the source's appearance. LoRA layers live inside
    ``to_q/to_k/to_v/to_out`` and apply as usual.

    With ``feed`` and ``name`` the source is not in the batch: ``feed[name]`` holds the source's input to this
    layer (one sample, as :class:`RecordingProcessor` kept it) and every sample of the batch reads its K/V.
    """

    def __init__(self, feed: dict[str, Tensor] | None = None, name: str | None = None) -> None:
        if feed is not None and name is None:
            raise ValueError("feed needs the layer's name")
        self.feed, self.name = feed, name

    @staticmethod
    def _tokens(attn: Any, x: Tensor) -> Tensor:
        """The layer's input as ``(B, tokens, C)``, group-normed when the layer has a group norm."""
        if x.ndim == 4:
            b, c, h, w = x.shape
            x = x.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        return x

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        residual = hidden_states
        h, w = hidden_states.shape[-2:] if hidden_states.ndim == 4 else (None, None)
        hidden_states = self._tokens(attn, hidden_states)
        batch = hidden_states.shape[0]
        q = attn.to_q(hidden_states)
        if self.feed is None:
            if batch % 2:
                raise ValueError(f"mutual self-attention needs a [source, edited] batch; got batch size {batch}")
            src, copies = hidden_states[: batch // 2], 2
        else:
            src, copies = self._tokens(attn, self.feed[self.name].to(hidden_states)), batch
        k = attn.to_k(src).repeat(copies, 1, 1)
        v = attn.to_v(src).repeat(copies, 1, 1)
        heads = attn.heads
        d = q.shape[-1] // heads

        def split(x: Tensor) -> Tensor:
            return x.view(batch, -1, heads, d).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, heads * d).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if h is not None:
            out = out.transpose(-1, -2).reshape(batch, -1, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class RecordingProcessor:
    """Runs a layer's own processor unchanged and keeps its input (``store[name]``, detached): the source's
    self-attention inputs, recorded while inverting (``source_kv=inversion``) or while denoising the source alone
    (``source_cache``), for sampling that reads them instead of a source branch."""

    def __init__(self, inner: Any, store: dict[str, Tensor], name: str) -> None:
        self.inner, self.store, self.name = inner, store, name

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
    ) -> Tensor:
        # The parameters are spelled out: diffusers passes a processor only the keyword arguments its signature
        # names (``temb`` in UNet2DModel's attention blocks), and warns about the rest.
        self.store[self.name] = hidden_states.detach()
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


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


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the ``autocast`` parameter (``none`` is a no-op)."""
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[mode])


@contextlib.contextmanager
def attention_processors(unet: torch.nn.Module, replace: dict[str, Any]) -> Iterator[None]:
    """Install attention processors by module path for the duration of a block (``Attention.set_processor``, so
    UNets without ``set_attn_processor`` work too); the originals come back even on error."""
    modules = attention_modules(unet)
    unknown = set(replace) - set(modules)
    if unknown:
        raise ValueError(f"no attention modules named {sorted(unknown)}")
    original = {name: modules[name].processor for name in replace}
    try:
        for name, proc in replace.items():
            modules[name].set_processor(proc)
        yield
    finally:
        for name, proc in original.items():
            modules[name].set_processor(proc)


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
            for _ in tqdm(range(steps), desc="identity LoRA", disable=None if progress else True, leave=False):
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
                kw = {k: v.expand(batch, *v.shape[1:]) for k, v in cond.items()}
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
