"""The diffusion engine's parameters (every name ``--help-params`` lists under inversion, sampling, features and
speed and memory), registered once on import."""

from __future__ import annotations

from ...core.params import Param, register

register(
    Param(
        "inference_steps",
        int,
        50,
        "diffusion: DDIM steps of the full schedule",
        "engine:diffusion",
        min=1,
        max=1000,
        group="inversion",
        common=True,
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
        group="inversion",
        common=True,
    ),
    Param(
        "mutual_attn_start_layer",
        int,
        10,
        "diffusion: first transformer block (execution order: down, mid, up) whose self-attention uses the source "
        "branch's K/V while sampling",
        "engine:diffusion",
        min=0,
        group="sampling",
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
        group="sampling",
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
        group="speed and memory",
    ),
    Param(
        "preview_vae",
        str,
        "auto",
        "diffusion, live previews (record_frames; the web app): the autoencoder that decodes them. auto: TAESD for "
        "the family (madebyollin/taesd or taesdxl, many times faster) when it can be loaded, else the model's own "
        "(the log and info.preview_vae say which); model: the model's own; or a tiny autoencoder's hub id or folder",
        "engine:diffusion",
        group="speed and memory",
    ),
    Param(
        "lcm_guidance",
        str,
        "none",
        "diffusion: for a UNet with a guidance embedding (time_cond_proj_dim: an LCM-distilled one, e.g. LCM "
        "Dreamshaper v7, FastDrag's): the guidance scale w whose embedding conditions every UNet call, as diffusers' "
        "LCM pipeline feeds w = guidance_scale - 1 (7.5 at its default 8.5); none feeds none, as FastDrag's code",
        "engine:diffusion",
        group="sampling",
    ),
    Param(
        "autocast",
        str,
        "none",
        "diffusion: mixed precision for the UNet calls of inversion, drag and sampling (none, bf16, fp16); changes "
        "the numbers, see docs/speed.md",
        "engine:diffusion",
        choices=("none", "bf16", "fp16"),
        group="speed and memory",
    ),
    Param(
        "grad_checkpointing",
        bool,
        False,
        "drag and identity LoRA training: recompute the UNet's activations in the backward pass instead of keeping "
        "them (less memory, more time; same numbers)",
        "engine:diffusion",
        group="speed and memory",
    ),
    Param(
        "vae_tiling",
        bool,
        False,
        "diffusion: encode and decode the image in overlapping tiles (diffusers' VAE tiling: far less memory at "
        "1024 px and up; tile seams can differ by a few levels)",
        "engine:diffusion",
        group="speed and memory",
    ),
    Param(
        "channels_last",
        bool,
        False,
        "diffusion: run the UNet's convolutions in channels-last memory layout (a speed option on some GPUs)",
        "engine:diffusion",
        group="speed and memory",
    ),
    Param(
        "resize_width",
        int,
        512,
        "diffusion: resize the image to this width (aspect kept, sides rounded to multiples of 8); 0 = keep its "
        "width. Pixel-space models always work at their own resolution",
        "engine:diffusion",
        min=0,
        group="features",
    ),
    Param(
        "size_rule",
        str,
        "rounded",
        "diffusion: the size an image is edited at. rounded: resized so that its sides are multiples of the VAE's "
        "factor (8 for SD), points mapped to that size; official: DragDiffusion's code, the image at its own size "
        "(the VAE crops the remainder), the supervision grid int(0.5*side) of it, the points scaled by grid/side "
        "in float32 and rounded, as their DragBench script does (to reproduce its numbers; needs resize_width=0 "
        "or the image's own width)",
        "engine:diffusion",
        choices=("rounded", "official"),
        group="features",
    ),
)
