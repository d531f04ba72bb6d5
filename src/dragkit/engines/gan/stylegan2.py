"""dragkit's StyleGAN2 generator, written from the papers and the weight layout of NVIDIA's snapshots.

Karras et al., *Analyzing and Improving the Image Quality of StyleGAN* (CVPR 2020) and *Training Generative
Adversarial Networks with Limited Data* (NeurIPS 2020): a mapping network ``z → w`` (the input normalised by its
second moment, fully connected layers with equalised learning rate and a 0.01 learning-rate multiplier, leaky ReLU
scaled by √2), broadcast to one ``w`` per layer (``w+``) and truncated towards the tracked mean ``w_avg``; a
synthesis network of blocks at 4, 8, …, R px, each a 3×3 modulated and demodulated convolution that doubles the
resolution (a stride-2 transposed convolution, then the [1, 3, 3, 1] low-pass filter), a second one at that
resolution, per-pixel noise scaled by a learned strength, and a 1×1 modulated "to RGB" convolution whose output is
added to the upsampled image of the block before (the "skip" architecture). Plain PyTorch operations only, no
compiled extensions; fp32 on a CPU.

Module and parameter names follow the snapshots' ``G_ema`` state dict (``mapping.fc0.weight``,
``synthesis.b64.conv0.affine.bias``, ``synthesis.b4.const``, the ``noise_const`` buffers, …), so the converted
state of a StyleGAN2-ADA PyTorch file loads with ``strict=True``: :func:`generator_from_record` builds it from a
:class:`~dragkit.engines.gan.nvidia_pkl.PersistentRecord` (read safely by
:func:`~dragkit.engines.gan.nvidia_pkl.read_nvidia_pkl`). The per-layer ``w`` indexing follows the papers' layout:
block ``b4`` reads ``w[0]`` (conv) and ``w[1]`` (to RGB); every later block reads three consecutive entries and the
next block starts at its to-RGB entry, so a generator of R px has ``2·log2(R) − 2`` of them.

Not here yet: StyleGAN3's alias-free layers, conditional generators (``c_dim > 0``), the "orig" and "resnet"
architectures; each is refused with one line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import ModelError

SQRT2 = math.sqrt(2.0)


def lowpass_filter() -> Tensor:
    """The [1, 3, 3, 1] binomial filter as a normalised 4×4 kernel (sum 1)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(k, k)
    return f / f.sum()


def _depthwise(x: Tensor, kernel: Tensor) -> Tensor:
    """``x`` convolved (a true convolution: the kernel flipped) with one 2-D kernel per channel, 'valid'."""
    c = x.shape[1]
    k = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, k, groups=c)


def upsample2x(x: Tensor, f: Tensor) -> Tensor:
    """The image path's 2× upsampling: zeros inserted after every sample, padded (2, 1) on each axis, filtered by the
    4×4 ``f`` scaled by 4 (the gain that keeps the mean). ``(N, C, H, W)`` → ``(N, C, 2H, 2W)``."""
    n, c, h, w = x.shape
    y = x.new_zeros(n, c, 2 * h, 2 * w)
    y[:, :, ::2, ::2] = x
    return _depthwise(F.pad(y, (2, 1, 2, 1)), f * 4)


class FullyConnected(nn.Module):
    """A dense layer with equalised learning rate: the stored weight is scaled by ``lr_multiplier / √fan_in`` and the
    stored bias by ``lr_multiplier`` at run time; ``activation`` is ``linear`` or ``lrelu`` (slope 0.2, gain √2)."""

    def __init__(self, fan_in: int, fan_out: int, activation: str = "linear", lr_multiplier: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.activation, self.lr_multiplier = activation, lr_multiplier
        self.weight_gain = lr_multiplier / math.sqrt(fan_in)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)
        return F.leaky_relu(y, 0.2) * SQRT2 if self.activation == "lrelu" else y


class MappingNetwork(nn.Module):
    """``z`` → ``w``, then broadcast to ``num_ws`` rows and truncated (``w_avg + ψ (w − w_avg)`` on the first
    ``truncation_cutoff`` rows, all when ``None``)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        for i in range(num_layers):
            fc = FullyConnected(z_dim if i == 0 else w_dim, w_dim, "lrelu", lr_multiplier)
            setattr(self, f"fc{i}", fc)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Tensor:
        x = z.float()
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


def modulated_conv(
    x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool, up: bool = False, f: Tensor | None = None
) -> Tensor:
    """One modulated convolution per sample (a grouped convolution over the batch): the weight ``(O, I, k, k)``
    scaled by each sample's style ``(N, I)`` over its input channels, then (``demodulate``) each output channel
    divided by the norm of its scaled weights (+1e-8). ``up``: a stride-2 transposed convolution, padded by 1 and
    filtered by ``f`` × 4, ``(H, W)`` → ``(2H, 2W)``; otherwise a same-size convolution."""
    n, i, h, w_ = x.shape
    o, _, kh, kw = weight.shape
    wt = weight[None] * styles[:, None, :, None, None]  # (N, O, I, k, k)
    if demodulate:
        wt = wt * (wt.square().sum((2, 3, 4)) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, n * i, h, w_)
    if up:
        if f is None:
            raise ValueError("an upsampling modulated convolution needs its low-pass filter")
        y = F.conv_transpose2d(x, wt.transpose(1, 2).reshape(n * i, o, kh, kw), stride=2, groups=n)
        y = _depthwise(F.pad(y, (1, 1, 1, 1)), f * 4)
    else:
        y = F.conv2d(x, wt.reshape(n * o, i, kh, kw), padding=kh // 2, groups=n)
    return y.reshape(n, o, *y.shape[-2:])


NOISE_MODES = ("const", "random", "none")


class SynthesisLayer(nn.Module):
    """A 3×3 modulated convolution (doubling the resolution when ``up``), per-pixel noise, bias, leaky ReLU × √2,
    clamped to ±``conv_clamp`` when set."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool, conv_clamp):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels)
        nn.init.ones_(self.affine.bias)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", lowpass_filter())

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "const", generator=None) -> Tensor:
        x = modulated_conv(x, self.weight, self.affine(w), True, self.up, self.resample_filter)
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif noise_mode == "random":
            r = self.resolution
            noise = torch.randn(x.shape[0], 1, r, r, generator=generator, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGB(nn.Module):
    """A 1×1 modulated convolution without demodulation (the style scaled by 1/√channels), plus bias, clamped."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels)
        nn.init.ones_(self.affine.bias)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.style_gain
        y = modulated_conv(x, self.weight, styles, demodulate=False) + self.bias[None, :, None, None]
        return y if self.conv_clamp is None else y.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: the learned constant (4 px) or an upsampling layer, a second layer, to-RGB added to the
    upsampled image so far."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, conv_clamp
    ):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, True, conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, False, conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp)
        self.register_buffer("resample_filter", lowpass_filter())
        self.num_conv = 1 if resolution == 4 else 2

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str, generator=None):
        """``ws``: this block's ``num_conv + 1`` rows. Returns the block's features and the image so far."""
        if self.resolution == 4:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, generator)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)
            x = self.conv1(x, ws[:, 1], noise_mode, generator)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2x(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """``w+`` ``(N, num_ws, w_dim)`` → image ``(N, C, R, R)`` (about [−1, 1], not clamped) and, on request, every
    block's features (DragGAN's ``feature_idx`` counts these from the 4-px block)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ModelError(f"img_resolution={img_resolution}: StyleGAN2 needs a power of two of at least 4")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        for r in self.resolutions:
            block = SynthesisBlock(channels.get(r // 2, 0), channels[r], w_dim, r, img_channels, conv_clamp)
            setattr(self, f"b{r}", block)
        self.num_ws = 2 * len(self.resolutions)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{r}") for r in self.resolutions]

    def forward(self, ws: Tensor, noise_mode: str = "const", return_features: bool = False, generator=None):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode={noise_mode!r}: choose one of {', '.join(NOISE_MODES)}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws is {tuple(ws.shape)}; this generator takes (N, {self.num_ws}, {self.w_dim})")
        _, img, feats = self.run_blocks(ws, noise_mode=noise_mode, generator=generator)
        return (img, feats) if return_features else img

    def run_blocks(
        self,
        ws: Tensor,
        start: int = 0,
        stop: int | None = None,
        x: Tensor | None = None,
        img: Tensor | None = None,
        noise_mode: str = "const",
        generator=None,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Blocks ``start`` to ``stop − 1`` (counted from the 4-px block) on the features ``x`` and image ``img``
        entering block ``start`` (none for block 0), driven by the whole w+ ``ws``. Returns the last block's features
        and image and every block's features."""
        ws = ws.float()
        blocks = self.blocks()
        i = sum(b.num_conv for b in blocks[:start])
        feats = []
        for block in blocks[start:stop]:
            x, img = block(x, img, ws[:, i : i + block.num_conv + 1], noise_mode, generator)
            i += block.num_conv
            feats.append(x)
        assert x is not None and img is not None
        return x, img, feats


class StyleGAN2Generator(nn.Module):
    """The whole generator: ``mapping`` (z → w+) and ``synthesis`` (w+ → image), as in NVIDIA's ``G_ema``."""

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, w_dim, img_resolution, img_channels
        self.init_kwargs = {  # NVIDIA's constructor arguments for these numbers (what dragkit's layout stores)
            "z_dim": z_dim,
            "c_dim": 0,
            "w_dim": w_dim,
            "img_resolution": img_resolution,
            "img_channels": img_channels,
            "mapping_kwargs": {"num_layers": mapping_layers, "lr_multiplier": mapping_lr_multiplier},
            "synthesis_kwargs": {
                "architecture": "skip",
                "channel_base": channel_base,
                "channel_max": channel_max,
                "conv_clamp": conv_clamp,
            },
        }
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier)

    def forward(
        self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None, noise_mode: str = "const"
    ) -> Tensor:
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff), noise_mode)

    def z_from_seed(self, seed: int) -> Tensor:
        """DragGAN's and NVIDIA's seed semantics: ``numpy.random.RandomState(seed).randn(1, z_dim)`` (float64)."""
        return torch.from_numpy(np.random.RandomState(seed).randn(1, self.z_dim))


def generator_from_record(record: Any) -> StyleGAN2Generator:
    """dragkit's generator built from a StyleGAN2-ADA (or StyleGAN3-repository ``--cfg=stylegan2``) ``G_ema``
    record, its weights loaded with ``strict=True``; a configuration it cannot run is one line naming it."""
    name = getattr(record, "class_name", type(record).__name__)
    if name != "Generator" or not hasattr(record, "init_kwargs"):
        raise ModelError(f"G_ema is a {name}: only StyleGAN2 generators (class Generator) can run here")
    return generator_from_state(record.init_kwargs, record.state_dict())


def generator_from_state(kw: dict[str, Any], state: dict[str, Any]) -> StyleGAN2Generator:
    """dragkit's generator from NVIDIA's ``init_kwargs`` (``z_dim``, ``w_dim``, ``img_resolution``,
    ``mapping_kwargs``, ``synthesis_kwargs`` or those keys flat, as the StyleGAN3 repository writes them) and a state
    dict under NVIDIA's names (a converted ``G_ema``, or a ``.safetensors`` of it)."""
    missing = [k for k in ("z_dim", "w_dim", "img_resolution") if k not in kw]
    if missing:
        raise ModelError(f"the generator's init_kwargs lack {', '.join(missing)}: not a StyleGAN2 generator")
    mk = dict(kw.get("mapping_kwargs") or {})
    sk = {**dict(kw.get("synthesis_kwargs") or {}), **{k: v for k, v in kw.items() if k not in _GENERATOR_KEYS}}
    if int(kw.get("c_dim", 0)):
        raise ModelError(f"c_dim={kw['c_dim']}: conditional generators are not supported yet")
    if sk.get("architecture", "skip") != "skip":
        raise ModelError(f"architecture={sk['architecture']!r}: only StyleGAN2's 'skip' generator is supported")
    if any(k.startswith("synthesis.input.") or ".L0_" in k for k in state):
        raise ModelError("a StyleGAN3 generator (alias-free layers): not supported yet, only StyleGAN2")
    clamp = sk.get("conv_clamp")
    g = StyleGAN2Generator(
        z_dim=int(kw["z_dim"]),
        w_dim=int(kw["w_dim"]),
        img_resolution=int(kw["img_resolution"]),
        img_channels=int(kw.get("img_channels", 3)),
        mapping_layers=int(mk.get("num_layers", 8)),
        mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
        channel_base=int(sk.get("channel_base", 32768)),
        channel_max=int(sk.get("channel_max", 512)),
        conv_clamp=None if clamp is None else float(clamp),
    )
    try:
        g.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ModelError(f"the G_ema weights do not fit a StyleGAN2 generator: {first}") from None
    return g.eval().requires_grad_(False)


_GENERATOR_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
