"""Sampling: the DDIM schedules (forward and inverse, aligned), stepping a latent through any span of the schedule,
the regional SDE step of seed variants, and how sampling-time parts (``dragkit.core.protocols.SamplingGuide``) act
on a denoising step. The scheduler does every DDIM step (``DDIMScheduler.step``, ``DDIMInverseScheduler.step``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import ParameterError
from ...core.protocols import GuideStep, LatentGuide, SamplingGuide
from .attention import RecordingProcessor, attention_modules, attention_processors
from .features import autocast, unet_forward
from .source_cache import Records


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


def run_steps(
    unet: torch.nn.Module,
    scheduler: Any,
    z: Tensor,
    cond: dict[str, Tensor],
    timesteps: Iterable[Tensor],
    record: Sequence[str] = (),
    records: Records | None = None,
    autocast_mode: str = "none",
) -> Tensor:
    """Step one latent through ``timesteps`` with ``scheduler`` (the UNet's plain self-attention), keeping the
    inputs of the ``record`` layers in ``records`` by timestep (every timestep gets an entry, empty when no layer is
    recorded). Inversion records the source through it (``source_kv=inversion``)."""
    store: dict[str, Tensor] = {}
    modules = attention_modules(unet)
    procs = {name: RecordingProcessor(modules[name].processor, store, name) for name in record}
    device = next(unet.parameters()).device
    with attention_processors(unet, procs):
        for t in timesteps:
            with autocast(device, autocast_mode):
                eps = unet(z, t, **cond, return_dict=False)[0]
            z = scheduler.step(eps.to(z.dtype), t, z, return_dict=False)[0]
            if records is not None:
                records[int(t)] = dict(store)
    return z


def renoise(scheduler: Any, z: Tensor, t_from: Tensor, t_to: Tensor, noise: Tensor) -> Tensor:
    """The forward process from ``z`` at ``t_from`` to ``t_to`` (later):
    ``√(ᾱ_to/ᾱ_from)·z + √(1 − ᾱ_to/ᾱ_from)·noise``
    with the scheduler's own ``alphas_cumprod``; ``z`` itself when ``t_to == t_from``."""
    a = scheduler.alphas_cumprod
    ratio = (a[int(t_to)] / a[int(t_from)]).to(torch.float64)
    return (ratio.sqrt() * z.double() + (1 - ratio).clamp_min(0).sqrt() * noise.double()).to(z.dtype)


@dataclass
class Variation:
    """A seed variant's sampling (DiffEditor's regional SDE): inside ``region`` (a latent-resolution 0/1 mask) the
    edited branch takes DDIM steps with η ``eta`` and fresh noise from ``generator``; elsewhere, deterministic ones."""

    eta: float
    region: Tensor
    generator: torch.Generator


def regional_step(scheduler: Any, eps: Tensor, t: Tensor, z: Tensor, variation: Variation) -> Tensor:
    """One step of the batch ``[source, edited]``: the source branch deterministic, the edited one stochastic inside
    the variation's region. Both steps are the scheduler's own."""
    det = scheduler.step(eps, t, z, return_dict=False)[0]
    noise = torch.randn(z[1:].shape, generator=variation.generator).to(z)
    sto = scheduler.step(eps[1:], t, z[1:], eta=variation.eta, variance_noise=noise, return_dict=False)[0]
    r = variation.region.to(z)
    return torch.cat([det[:1], r * sto + (1 - r) * det[1:]])


def latent_step(latent: Tensor, energy: Callable[[Tensor], Tensor], lr: float, where: Tensor | None) -> tuple:
    """One Adam step (fresh state, so about ``lr`` per element along the gradient's sign) on ``latent`` for
    ``energy(latent)``: how a ``latent`` sampling guide acts. Returns the new latent (detached) and the energy
    before the step. ``where`` (0/1, broadcastable to the latent) zeroes the gradient outside it, and a fresh Adam
    step moves an element with zero gradient by exactly 0: only that region changes."""
    z = latent.detach().float().clone().requires_grad_(True)  # never update the caller's tensor in place
    with torch.enable_grad():
        loss = energy(z)
        (grad,) = torch.autograd.grad(loss, z)
    if where is not None:
        grad = grad * where.to(grad)
    opt = torch.optim.Adam([z], lr=lr)
    z.grad = grad
    opt.step()
    return z.detach().to(latent.dtype), float(loss.detach())


def branch_features(
    unet: torch.nn.Module,
    batch: Tensor,
    t: Tensor,
    cond: dict[str, Tensor],
    block: int,
    grid: tuple[int, int],
    eps: bool,
) -> tuple[Tensor, Tensor | None]:
    """One forward of the batch ``[source, edited]``: ``up_blocks[block]``'s output of both on the supervision grid,
    and the noise prediction when ``eps`` (else the forward stops at the block)."""
    out = unet_forward(unet, batch, t, cond, [block], need_eps=eps)
    return F.interpolate(out.features[block].float(), size=grid, mode="bilinear", align_corners=False), out.eps


def active(guides: Sequence[SamplingGuide], kind: str, index: int) -> list[SamplingGuide]:
    """The guides of ``kind`` that act on the ``index``-th denoising step."""
    return [g for g in guides if g.kind == kind and index < g.steps]


def apply_latent_guides(
    unet: torch.nn.Module,
    guides: Sequence[SamplingGuide],
    z: Tensor,
    t: Tensor,
    cond: dict[str, Tensor],
    index: int,
    feature_block: int,
    grid: tuple[int, int],
    report: dict[str, float],
) -> Tensor:
    """Each active ``latent`` guide's Adam step on the edited half of ``z = [source, edited]``, its energy computed
    from both branches' features in one forward (mutual attention as installed); returns the new batch."""
    z_src = z[:1]
    for guide in guides:
        assert isinstance(guide, LatentGuide), f"{guide.name}: a latent guide needs lr and where"

        def energy(z_edit: Tensor, guide: SamplingGuide = guide) -> Tensor:
            batch = torch.cat([z_src.to(z_edit.dtype), z_edit]).to(unet.dtype)
            f, _ = branch_features(unet, batch, t, cond, feature_block, grid, eps=False)
            value = guide(GuideStep(index, t, source=f[:1], edited=f[1:]))
            if value is None:
                raise RuntimeError(f"latent guide {guide.name} returned no energy")
            return value

        z_edit, before = latent_step(z[1:], energy, guide.lr, guide.where)
        report[guide.name] = round(before, 6)
        z = torch.cat([z[:1], z_edit])
    return z


def guided_noise(
    unet: torch.nn.Module,
    scheduler: Any,
    decode: Callable[[Tensor], Tensor],
    noise_guides: Sequence[SamplingGuide],
    directions: Sequence[SamplingGuide],
    z: Tensor,
    t: Tensor,
    cond: dict[str, Tensor],
    index: int,
    feature_block: int,
    grid: tuple[int, int],
    report: dict[str, float],
) -> Tensor:
    """The batch's model output with the ``noise`` guides' energy guidance on the edited branch (classifier
    guidance on ``p ∝ exp(−E)``: ``ε_edit + √(1 − ᾱ_t)·∇E``, ``E`` the sum of their energies, applied in the
    model's own prediction type by :func:`shift_noise`) and the ``direction`` guides' offsets (differences of two
    outputs of the same model, in its own prediction type, as classifier-free guidance is). One forward of the
    batch gives the features, the prediction and the gradient."""
    ze = z[1:].detach().float().requires_grad_(True)
    with torch.enable_grad():
        batch = torch.cat([z[:1].float(), ze]).to(unet.dtype)
        f, noise = branch_features(unet, batch, t, cond, feature_block, grid, eps=True)
        decoded: list[Tensor] = []

        def x0_image() -> Tensor:  # decoded once, by the first guide that reads it
            if not decoded:
                x0 = scheduler.step(noise[1:].float(), t, ze, return_dict=False)[1]
                decoded.append(decode(x0.to(unet.dtype)).float())
            return decoded[0]

        step = GuideStep(index, t, source=f[:1], edited=f[1:], x0_image=x0_image, report=report)
        energy = ze.new_zeros(())
        for guide in noise_guides:
            value = guide(step)
            if value is not None:
                energy = energy + value
        grad = torch.autograd.grad(energy, ze)[0] if energy.requires_grad else torch.zeros_like(ze)
    eps = noise.detach().clone()
    a = scheduler.alphas_cumprod[int(t)].to(eps.device, torch.float32)
    eps[1:] = shift_noise(scheduler, eps[1:], (1 - a).sqrt() * grad, t)
    if directions:
        step.noise = lambda c: unet(z, t, **c, return_dict=False)[0][1:]
        for guide in directions:
            offset = guide(step)
            if offset is not None:
                eps[1:] = eps[1:] + offset
    return eps


def shift_noise(scheduler: Any, output: Tensor, delta: Tensor, t: Tensor) -> Tensor:
    """The model ``output`` changed so that the noise it implies (ε) moves by ``delta`` at fixed ``x_t``, whatever the
    scheduler's ``prediction_type``: ε-prediction ``+δ``; v-prediction ``+δ/√ᾱ_t`` (from ``ε = √ᾱ·v + √(1−ᾱ)·x_t``);
    x0-prediction (``sample``) ``−√(1−ᾱ)/√ᾱ·δ`` (from ``x0 = (x_t − √(1−ᾱ)·ε)/√ᾱ``). Classifier guidance is a shift
    of ε, so every prediction type gets the same guided step."""
    kind = scheduler.config.prediction_type
    a = scheduler.alphas_cumprod[int(t)].to(output.device, torch.float32)
    if kind == "epsilon":
        shift = delta
    elif kind == "v_prediction":
        shift = delta / a.sqrt()
    elif kind == "sample":
        shift = -delta * (1 - a).sqrt() / a.sqrt()
    else:
        raise ParameterError(f"prediction_type={kind!r}: guidance knows epsilon, v_prediction and sample")
    return (output.float() + shift).to(output.dtype)


def check_feed(source: Records, timesteps: Sequence[Tensor], guides: Sequence[SamplingGuide]) -> None:
    """Sampling that reads recorded source inputs needs one for every timestep and cannot serve sampling-time parts,
    which read the source branch's features."""
    if guides:
        names = ", ".join(g.name for g in guides)
        raise ParameterError(
            f"source_kv=inversion: the sampling-time parts ({names}) read the source branch's features; use "
            "source_kv=recompute with them"
        )
    missing = [int(t) for t in timesteps if int(t) not in source]
    if missing:
        raise RuntimeError(f"no recorded source inputs for timesteps {missing[:3]}...")
