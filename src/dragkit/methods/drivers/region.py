"""``sampler=region``: copy and paste regions of the inversion's latents while denoising (RegionDrag)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.errors import ParameterError
from ...core.loop import DragLoopOutput
from ...engines.diffusion import (
    MutualSelfAttentionProcessor,
    RecordingProcessor,
    attention_modules,
    attention_processors,
)
from ...parts.region import copy_paste, handle_noise, point_cells, region_cells, sde_down, sde_noise, sde_up
from .edit import DiffusionEdit, Outcome


def region_copy_paste(edit: DiffusionEdit, options: None = None) -> list[Outcome]:
    """RegionDrag (Lu, Li & Han, ECCV 2024; its released code's order): no optimization, one pass.

    1. The correspondences: latent cells, from the points or from the painted region moved by them
       (``region_from``, :mod:`dragkit.parts.region`).
    2. The SDE inversion of a posterior draw of the image over the last ``int(inversion_strength·N)`` timesteps of
       their schedule (:func:`their_schedule`), each step a fixed stride up with a fresh draw, keeping every latent,
       the noise that undoes each step, and each UNet call's inputs to the ``mutual`` self-attention layers (all of
       them in the preset).
    3. The handle cells of the inverted latent re-noised (``region_noise``).
    4. Denoising step ``j`` of ``n``: the handle cells of the inversion's latent at that step pasted on the target
       cells (not in the last ``int(region_copy_end·N)`` steps), optionally the inversion's latent outside the
       mask (``region_blend``), then the stochastic step reusing inversion noise ``n−1−j``, every mutual layer's keys
       and values computed from what inversion call ``n−1−j`` recorded.

    The inversion the pipeline made before (DDIM, ``inversion_strength``) is not used: this one is stochastic and
    runs on their timesteps. The result is decoded at the timestep the last step reaches (their code never steps to
    0). The reported handles are the targets: nothing is tracked."""
    engine, p, req = edit.engine, edit.params, edit.request
    steps = p["inference_steps"]
    n = int(p["inversion_strength"] * steps)  # their int(start_t·N), not dragkit's round
    if not 1 <= n < steps:
        raise ParameterError(
            f"inversion_strength={p['inversion_strength']} inverts {n} of inference_steps={steps}: sampler=region "
            f"needs between 1 and {steps - 1} (it denoises from the timestep before the inverted one)"
        )
    if p["source_kv"] == "inversion":
        raise ParameterError(
            "source_kv=inversion: sampler=region records the keys and values of its own (SDE) inversion; leave "
            "source_kv=recompute"
        )
    timesteps, alphas, stride = their_schedule(engine, steps)
    top = int(timesteps[steps - n]) + stride
    if top >= len(alphas):
        raise ParameterError(
            f"inversion_strength={p['inversion_strength']}: the inversion would reach timestep {top}, past the "
            f"model's last ({len(alphas) - 1}); lower it"
        )
    g = torch.Generator().manual_seed(req.seed)
    with edit.prof.stage("posterior"):
        z0 = engine.encode(edit.image).sample(g).float()  # a posterior draw (their code's), the seed's first
    lh, lw = z0.shape[-2:]
    source, target, how = correspondences(edit, (lh, lw))
    where = None
    if p["region_blend"] == "mask":
        if req.mask is None:
            raise ParameterError("region_blend=mask keeps the inversion outside the painted mask: paint a mask")
        where = F.interpolate(torch.from_numpy(req.mask).float()[None, None], size=(lh, lw), mode="nearest") == 1
        where = where.to(z0.device)

    # 2. the SDE inversion, from the clean latent placed at their schedule's first inverted timestep
    cond = engine.cond(edit.embeds, 1)
    a = alphas.to(z0.device)
    modules = attention_modules(engine.unet)
    store: dict[str, Tensor] = {}
    latents, noises, records = [z0], [], []
    taus = timesteps[steps - n :].flip(0).tolist()
    with (
        edit.prof.stage("inversion"),
        attention_processors(
            engine.unet, {name: RecordingProcessor(modules[name].processor, store, name) for name in edit.mutual}
        ),
    ):
        x = z0
        for t in engine.progress_bar(taus) if edit.progress else taus:
            up = t + stride
            x_up = sde_up(x, a[t], a[up], torch.randn(x.shape, generator=g).to(x))
            eps = epsilon(engine, x_up, up, cond, a[up])
            noises.append(sde_noise(x, x_up, eps, a[t], a[up]))
            records.append(dict(store))
            latents.append(x_up)
            x = x_up

    # 3. the handle noise, one draw; 4. the denoising, pasting from the inversion's trajectory
    z = handle_noise(latents[-1], source, p["region_noise"], torch.randn((z0.shape[1], len(source)), generator=g))
    until = steps - int(p["region_copy_end"] * steps)  # index into the whole schedule
    first = steps - n - 1
    feed: dict[str, Tensor] = {}
    copied = 0
    todo = timesteps[first:-1].tolist()
    with (
        edit.prof.stage("sampling"),
        attention_processors(engine.unet, {name: MutualSelfAttentionProcessor(feed, name) for name in edit.mutual}),
    ):
        for j, t in enumerate(engine.progress_bar(todo) if edit.progress else todo):
            known = latents[n - j]
            if first + j < until:
                z = copy_paste(z, known, source, target)
                copied += 1
            if where is not None:
                z = torch.where(where, z, known)
            feed.update(records[n - 1 - j])
            eps = epsilon(engine, z, t, cond, a[t])
            down = t - stride
            z = sde_down(z, eps, a[t], a[down] if down >= 0 else torch.tensor(1.0, device=z.device), noises[n - 1 - j])

    edit.info["handles_tracked"] = False
    facts = {
        "drag_timestep": todo[0],
        "region": {
            "from": how,
            "pairs": len(source),
            "copied_steps": copied,
            "timesteps": todo,
            "stride": stride,
            "final_timestep": todo[-1] - stride,
            "blend": p["region_blend"],
        },
    }
    loop = DragLoopOutput(latents[-1], edit.targets.clone(), 0, "region", [], 0.0)
    return [Outcome(z.to(edit.latent.dtype), loop, facts)]


def correspondences(edit: DiffusionEdit, size: tuple[int, int]) -> tuple[Tensor, Tensor, str]:
    """The source and target latent cells ``(K, 2)`` ``(x, y)`` of the edit (``region_from``) and which mapping made
    them."""
    req, how = edit.request, edit.params["region_from"]
    (W, H), (lh, lw) = req.size, size
    scale = (lw / W, lh / H)
    if how == "auto":
        how = "mask" if req.mask is not None else "points"
    handles, targets = point_cells(req.handles, scale, size), point_cells(req.targets, scale, size)
    if how == "points":
        return handles, targets, how
    if req.mask is None:
        raise ParameterError("region_from=mask moves the painted region: paint a mask, or use region_from=points")
    source, target = region_cells(req.mask, handles, targets, size)
    if not len(source):
        raise ParameterError(
            "region_from=mask: no handle lies inside the painted region (on the latent grid), so nothing moves; put "
            "a handle inside it"
        )
    return source, target, how


def their_schedule(engine: Any, steps: int) -> tuple[Tensor, Tensor, int]:
    """RegionDrag's timesteps: those of DPM-Solver++ (multistep) for ``steps`` steps from the model's scheduler
    config (its spacing: "leading" on SD 1.5's folder gives 941, 894, ... 48; diffusers' default "linspace" 999, 949,
    ... 50), and its sampler's fixed stride ``num_train_timesteps // steps`` (50 at 20 steps; their code writes
    ``1000 // N``), which each step takes whatever the spacing. Returns the timesteps (long), ``ᾱ`` (float32) and the
    stride."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(engine.scheduler.config)
    with warnings.catch_warnings():  # its sigmas' numpy 2 deprecation, about arrays this does not read
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(steps)
    return scheduler.timesteps.cpu().long(), scheduler.alphas_cumprod, scheduler.config.num_train_timesteps // steps


def epsilon(engine: Any, z: Tensor, t: int, cond: dict[str, Any], a_t: Tensor) -> Tensor:
    """The UNet's noise prediction ε for ``z`` at ``t`` (attention as installed), converted from the model's own
    prediction type (v: ``√ᾱ·v + √(1−ᾱ)·z``; x0: ``(z − √ᾱ·x0)/√(1−ᾱ)``)."""
    out = engine.unet(z.to(engine.dtype), t, **cond, return_dict=False)[0].to(z.dtype)
    kind = engine.scheduler.config.prediction_type
    if kind == "epsilon":
        return out
    if kind == "v_prediction":
        return a_t**0.5 * out + (1 - a_t) ** 0.5 * z
    if kind == "sample":
        return (z - a_t**0.5 * out) / (1 - a_t) ** 0.5
    raise ParameterError(f"prediction_type={kind!r}: sampler=region knows epsilon, v_prediction and sample")
