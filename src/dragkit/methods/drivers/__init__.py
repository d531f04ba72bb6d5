"""Drivers: the few ways a diffusion method uses the engine once the source is inverted.

A driver is a short function over the engine, the drag loop and the parts: it receives the edit the pipeline
prepared (:class:`DiffusionEdit`: the inverted latent, the points and the mask on the supervision grid, the
mutual-attention layers, ...) and returns one :class:`Outcome` per result — the edited latent to decode, the drag's
steps and the result's facts. A preset names its driver through the ``sampler`` parameter, whose choices are the
drivers registered here:

- ``drag`` — :func:`optimize_then_sample`: the drag loop optimizes the latent, then both branches are denoised with
  mutual self-attention (DragDiffusion and the methods built on it; CLoss acts while sampling);
- ``alternate`` — :func:`alternate_drag_denoise`: drag a little at each of the first sampling timesteps (GoodDrag);
- ``warp`` — :func:`warp_then_sample`: FastDrag's one-step warp, then sampling (FastDrag, dragkit);
- ``guidance`` — :func:`guide_while_sampling`: nothing is optimized; sampling-time parts guide the denoising
  (LucidDrag), one result per intention and seed variant;
- ``bottleneck`` — :func:`optimize_bottleneck`: the drag loop optimizes the UNet's bottleneck (its mid block's
  output), which then replaces the mid block's output while denoising (DragNoise);
- ``inpaint`` — :func:`warp_then_inpaint`: no inversion; the painted region warped in pixels, what it vacated
  inpainted by an inpainting checkpoint (Inpaint4Drag);
- ``region`` — :func:`region_copy_paste`: no optimization; the handle regions of an SDE inversion's latents copied
  onto the targets at every denoising step (RegionDrag);
- ``freedrag`` — :func:`drag_in_rounds`: the latent optimized in rounds toward adaptively updated templates, the
  points placed by a line search instead of tracked, then sampled as ``drag`` (FreeDrag).

Each driver is a module here (:mod:`.optimize`, :mod:`.alternate`, :mod:`.warp`, :mod:`.guidance`, :mod:`.bottleneck`,
:mod:`.inpaint`, :mod:`.region`, :mod:`.freedrag`) over the pieces they share (:mod:`.steps`) and the prepared edit
(:mod:`.edit`). A method that uses the engine another way is a new module here, registered below, and a preset in
:mod:`dragkit.methods.presets`; its new ideas are parts any other method can use by name.
"""

from __future__ import annotations

from ...core.params import Param, register
from .alternate import alternate_drag_denoise
from .bottleneck import optimize_bottleneck
from .edit import DRIVERS, DiffusionEdit, Driver, Outcome, check_options, get_driver, register_driver
from .freedrag import drag_in_rounds
from .guidance import GuidanceOptions, guide_while_sampling
from .inpaint import warp_then_inpaint
from .optimize import optimize_then_sample
from .region import region_copy_paste
from .steps import closs_guides, drag, loop_terms, run_loop, sample, warped
from .warp import repaired, warp_then_sample

__all__ = [
    "DRIVERS",
    "DiffusionEdit",
    "Driver",
    "GuidanceOptions",
    "Outcome",
    "alternate_drag_denoise",
    "check_options",
    "closs_guides",
    "drag",
    "drag_in_rounds",
    "get_driver",
    "guide_while_sampling",
    "loop_terms",
    "optimize_bottleneck",
    "optimize_then_sample",
    "region_copy_paste",
    "register_driver",
    "repaired",
    "run_loop",
    "sample",
    "warp_then_inpaint",
    "warp_then_sample",
    "warped",
]

register_driver(
    Driver(
        "drag",
        optimize_then_sample,
        "optimize the latent with the drag loop, then sample with mutual self-attention (DragDiffusion and its kin)",
    )
)
register_driver(
    Driver(
        "alternate",
        alternate_drag_denoise,
        "drag a little at each of the first timesteps of the sampling, one denoising step between (GoodDrag)",
        reads_source_branch=True,
    )
)
register_driver(
    Driver(
        "warp",
        warp_then_sample,
        "no optimization; the latent warped in one step along the drags, then sampled (FastDrag)",
    )
)
register_driver(
    Driver(
        "guidance",
        guide_while_sampling,
        "no optimization; sampling-time parts guide the denoising (LucidDrag)",
        options=GuidanceOptions,
        reads_source_branch=True,
    )
)

register_driver(
    Driver(
        "bottleneck",
        optimize_bottleneck,
        "optimize the UNet's bottleneck (mid-block output) with the drag loop, then denoise with it substituted "
        "(DragNoise)",
    )
)

register_driver(
    Driver(
        "inpaint",
        warp_then_inpaint,
        "no inversion, no optimization; the painted region warped in pixels, what it vacated inpainted by an "
        "inpainting checkpoint (Inpaint4Drag)",
        inverts=False,
    )
)

register_driver(
    Driver(
        "region",
        region_copy_paste,
        "no optimization; the handle regions of an SDE inversion's latents copied onto the targets at every "
        "denoising step, keys and values from the inversion (RegionDrag)",
        inverts=False,
    )
)

register_driver(
    Driver(
        "freedrag",
        drag_in_rounds,
        "optimize the latent in rounds toward adaptively updated templates, the points placed by a line search "
        "along each drag instead of tracked, then sample with mutual self-attention (FreeDrag)",
    )
)

register(
    Param(
        "inpaint_steps",
        int,
        8,
        "sampler=inpaint: denoising steps of the inpainting (Inpaint4Drag's app 8, its benchmark 4)",
        "engine:diffusion",
        min=1,
        max=1000,
        group="inpaint",
    ),
    Param(
        "inpaint_strength",
        float,
        1.0,
        "sampler=inpaint: how much of the schedule the inpainting runs (1: from pure noise, Inpaint4Drag's; its "
        "unused SDXL path: 0.99)",
        "engine:diffusion",
        min=0.01,
        max=1,
        group="inpaint",
    ),
    Param(
        "inpaint_lora",
        str,
        "auto",
        "sampler=inpaint: an LCM-LoRA fused into the inpainting UNet, sampled with the LCM scheduler (hub id, "
        "folder or file; auto: latent-consistency/lcm-lora-sdv1-5, or -sdxl, as Inpaint4Drag; none: no LoRA, "
        "the checkpoint's DDIM)",
        "engine:diffusion",
        group="inpaint",
    ),
    Param(
        "inpaint_vae",
        str,
        "auto",
        "sampler=inpaint: the autoencoder of the inpainting (auto: TAESD, madebyollin/taesd or taesdxl, as "
        "Inpaint4Drag; model: the checkpoint's own VAE; or a tiny autoencoder's hub id or folder)",
        "engine:diffusion",
        group="inpaint",
    ),
    Param(
        "inpaint_composite",
        str,
        "inpainted",
        "sampler=inpaint: where the generated image replaces the warped one: inpainted (the inpainted region, "
        "Inpaint4Drag's app) or region (the whole painted region, its benchmark)",
        "engine:diffusion",
        choices=("inpainted", "region"),
        group="inpaint",
    ),
    Param(
        "propagate_end",
        int,
        0,
        "sampler=bottleneck: the last N steps of the schedule run without the optimized bottleneck (DragNoise's "
        "end_step; its paper stops at t' = 10, its code's default 0 substitutes it to the end)",
        "engine:diffusion",
        min=0,
        max=1000,
        group="sampling",
    ),
    Param(
        "repair_strength",
        float,
        0.0,
        "sampler=warp: re-generate the warp's seams and stretched places from this fraction of the schedule (0: off; "
        "more than inversion_strength), the moved content at the targets and everything outside the region kept",
        "engine:diffusion",
        min=0,
        max=1,
        group="warp",
    ),
    Param(
        "repair_keep",
        float,
        4.0,
        "repair_strength: radius (supervision-grid px) around each target kept as the warp left it",
        "engine:diffusion",
        min=0,
        group="warp",
    ),
    Param(
        "repair_band",
        int,
        1,
        "repair_strength: latent cells the repaired region reaches beyond the editable region's edge",
        "engine:diffusion",
        min=0,
        group="warp",
    ),
    Param(
        "drag_phases",
        int,
        7,
        "sampler=alternate: the number of timesteps, from the drag's on, each with a drag phase before its denoising "
        "step (GoodDrag's drag_end_step)",
        "engine:diffusion",
        min=1,
        max=1000,
        group="sampling",
    ),
    Param(
        "sampler",
        str,
        "drag",
        "diffusion: how the method uses the engine (its driver): "
        + "; ".join(f"{d.name}: {d.summary}" for d in DRIVERS.values()),
        "engine:diffusion",
        choices=tuple(DRIVERS),
        group="sampling",
        common=True,
    ),
)
