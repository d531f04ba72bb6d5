"""Attention, customised through diffusers' processor API: every ``Attention`` module by path, the self-attentions in
execution order, MasaCtrl's mutual self-attention (DragDiffusion's reference-latent control), a processor that
records a layer's input, and installing processors for a block of code with the originals always restored."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


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
    """Runs a layer's processor unchanged and keeps its input (``store[name]``, detached): the source's
    self-attention inputs, recorded while inverting (``source_kv=inversion``) or from the source half of the
    ``[source, edited]`` batch (``source_cache``; ``take``: the first ``take`` samples of the batch), for sampling
    that reads them instead of a source branch."""

    def __init__(self, inner: Any, store: dict[str, Tensor], name: str, take: int | None = None) -> None:
        self.inner, self.store, self.name, self.take = inner, store, name, take

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
        kept = hidden_states if self.take is None else hidden_states[: self.take]
        self.store[self.name] = kept.detach()
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


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
