"""``dragkit bench-speed``: one DragDiffusion edit done twice in one process, on the same model, image, points and
seed: (a) the **reference recipe**, DragDiffusion's steps the way its code does them (:func:`reference_edit`: the
UNet's weights requiring gradients in the drag, the whole UNet every drag step, one more forward for the initial
features, both branches denoised, the LoRA trained every time) and (b) dragkit's default path, first with its LoRA
trained (and cached), then again with the LoRA from the cache (as a new process would: no source cache), then
once more with the source cache too (the same image edited again in one session). Per-stage seconds and peak
memory for each, and their ratios.

``ablations`` adds one edit per optimization, each alone against the reference (LoRA off, so that only the drag and
sampling stages differ): what each one buys, measured side by side.

No Stable Diffusion weights are needed: by default the model is SD 1.5's UNet, VAE and text-encoder layout with
random weights (reduced width on the CPU, full width in fp16 on a GPU). Random weights make the timings and memory
real and the pictures meaningless.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.errors import ParameterError
from ..core.geometry import GridMap
from ..core.params import parse_method_spec
from ..core.types import DragRequest, DragResult

# the one edit: a DCGAN face (real weights, offline) at 512x512, one drag, a mask around it
FACE_SEED = 27
DRAG = ((256.0, 352.0), (256.0, 296.0))
MASK_BOX = (136, 176, 376, 432)  # x0, y0, x1, y1
PROMPT = "a photo of a face"
# the optimizations one at a time, LoRA off: (name, overrides, request without its mask?, measured against, what
# we predicted before measuring). The exact ones are dragkit's default path, so they are measured against the
# reference recipe; each named option is measured against dragkit's default path.
ABLATIONS: list[tuple[str, dict[str, Any], bool, str, str]] = [
    ("frozen weights, shared initial forward", {}, False, "reference", "drag 1.3-1.5x (no weight gradients)"),
    ("the same, no mask: + stop at the feature block", {}, True, "reference", "drag 2-2.5x (top block, ε skipped)"),
    ("source_kv=inversion", {"source_kv": "inversion"}, False, "dragkit", "sampling ~2x (batch 1, not 2)"),
    ("autocast=bf16", {"autocast": "bf16"}, False, "dragkit", "CPU: little or none; GPU: ~2x"),
    ("channels_last", {"channels_last": True}, False, "dragkit", "CPU: none; GPU: 1.1-1.3x"),
    ("grad_checkpointing", {"grad_checkpointing": True}, False, "dragkit", "drag memory -50% or more, time +30%"),
]


@torch.no_grad()
def reference_edit(
    pipe: Any, request: DragRequest, *, progress: bool = False, callback: Any = None, **overrides: Any
) -> DragResult:
    """DragDiffusion's steps done the way its code does them, on a :class:`DragDiffusionPipeline`'s engine: the
    identity LoRA trained every time (the cache neither read nor written), the inversion, the drag with the UNet's
    weights requiring gradients (their gradients computed and kept, then dropped) and the whole UNet every step,
    the initial features from one more forward, both branches denoised with mutual self-attention. The numbers
    are ``dragdiffusion``'s up to float noise; only the time and memory differ — what ``bench-speed`` compares."""
    from ..engines.diffusion import inversion_step_count, weights_require_grad
    from ..engines.diffusion.layout import adapt_to_unet
    from ..methods.drivers import DiffusionEdit, loop_terms
    from ..pipelines.common import editable_mask, make_result, resolve_params, run_preset_loop
    from ..utils.profiler import StageProfiler

    defaults = pipe.defaults_for("dragdiffusion")
    params = resolve_params("dragdiffusion", "diffusion", request, {**defaults, **overrides})
    adapt_to_unet(params, set(defaults) | set(overrides), pipe.engine.family, pipe.unet, pipe.engine.scale_factor)
    if params["source_kv"] != "recompute":
        raise ParameterError("the reference recipe recomputes the source branch: source_kv must be recompute")
    engine, prof = pipe.engine, StageProfiler(pipe.device)
    (W, H), (w, h) = request.size, engine.working_size(request.size, params)
    grid, steps = (int(0.5 * h), int(0.5 * w)), params["inference_steps"]
    n_inv = inversion_step_count(params["inversion_strength"], steps)
    gm = GridMap((H, W), grid, convention="corner")
    mutual = engine.mutual_layers(params["mutual_attn_start_layer"])
    info: dict[str, Any] = {"recipe": "reference", "source_cache": "off", "mutual_attention_blocks": mutual}
    with engine.editing(params):
        with prof.stage("encode"):
            embeds = engine.encode_prompt(request.prompt, (w, h))
            x = engine.image_tensor(request.image, (w, h))
            posterior = engine.encode(x)
        with prof.stage("lora"):
            args = (params, request.image, request.prompt, request.seed, (w, h), posterior, embeds)
            info.update(engine.identity_lora(*args, progress=progress, cache=False))
        with prof.stage("inversion"):
            zt = engine.invert(posterior.mean, embeds, steps, n_inv, progress=progress)
        start = steps - n_inv
        t = engine.timesteps(steps)[start]
        handles, targets = torch.round(gm.to_grid(request.handles)), torch.round(gm.to_grid(request.targets))
        plain = engine.features_at(t, embeds, params["feature_block"], grid)
        mask, image_mask = editable_mask(request, params, plain, zt.float(), handles, targets, gm, info, prof)
        mask = None if mask is None else mask.to(pipe.device)
        edit = DiffusionEdit(
            engine=engine,
            request=request,
            method="dragdiffusion",
            params=params,
            embeds=embeds,
            image=x,
            latent=zt,
            start=start,
            timestep=t,
            grid=grid,
            grid_map=gm,
            handles=handles,
            targets=targets,
            mask=mask,
            mutual=mutual,
            source=None,
            cache_key=None,
            cache_hit=False,
            info=info,
            prof=prof,
        )
        terms, denoised, clip = loop_terms(edit)
        features = engine.features_at(
            t, embeds, params["feature_block"], grid, denoised=denoised, x0_image=clip, full=True
        )
        with prof.stage("drag"), weights_require_grad(engine.unet, True):
            features(zt.float())  # their code computes the initial features with one more forward
            out = run_preset_loop(
                zt.float(), features, handles, targets, params, terms, mask=mask, callback=callback, cancel=None,
                progress=False,
            )  # fmt: skip
        with prof.stage("sampling"):
            _, z = engine.denoise(out.latent.to(zt.dtype), embeds, start, z_src=zt, mutual=mutual, progress=progress)
        with prof.stage("decode"):
            image = engine.decode_image(z, (H, W))
    return make_result(
        request, image, out, gm, method="dragdiffusion", params=params, info=info, prof=prof, mask=image_mask
    )


def _edit(pipe: Any, request: DragRequest, recipe: str, **overrides: Any) -> DragResult:
    """One edit by ``recipe``: ``reference`` (:func:`reference_edit`) or ``dragkit`` (the pipeline)."""
    if recipe == "reference":
        return reference_edit(pipe, request, **overrides)
    return pipe(request, progress=False, **overrides)


def default_request() -> DragRequest:
    """The benchmark's edit: DCGAN face 27 enlarged to 512x512, its nose dragged up, a mask around the face."""
    from ..pipelines.gan import DragGANPipeline

    face = DragGANPipeline.from_pretrained().generate(FACE_SEED).image.resize((512, 512), Image.BICUBIC)
    mask = np.zeros((512, 512), bool)
    x0, y0, x1, y1 = MASK_BOX
    mask[y0:y1, x0:x1] = True
    return DragRequest(face, [DRAG[0]], [DRAG[1]], mask=mask, prompt=PROMPT, seed=42)


SHAPES = ("sd15", "sdxl")


def build_model(folder: Path, device: str, width: int | None, shape: str = "sd15") -> tuple[Path, int]:
    """A pipeline with random weights shaped like SD 1.5 (``shape="sd15"``) or SDXL (``"sdxl"``: its blocks and
    transformer depths, two text encoders, trained size 1024): ``width`` channels in the first UNet block (320 is
    the real model's; default 64 on the CPU, 320 elsewhere)."""
    from ..utils.testing import build_sd15_shaped, build_sdxl_shaped

    if shape not in SHAPES:
        raise ParameterError(f"--shape {shape}: choose one of {', '.join(SHAPES)}")
    width = width or (64 if device == "cpu" else 320)
    build = build_sdxl_shaped if shape == "sdxl" else build_sd15_shaped
    return build(folder, width=width), width


@contextmanager
def _cache_in(folder: Path):
    old = os.environ.get("DRAGKIT_CACHE")
    os.environ["DRAGKIT_CACHE"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DRAGKIT_CACHE", None)
        else:
            os.environ["DRAGKIT_CACHE"] = old


def _stages(result: Any) -> dict[str, dict[str, Any]]:
    prof = {k: dict(v) for k, v in result.info["profile"].items() if k != "load"}
    return {
        k: {
            "seconds": float(v["seconds"]),
            "peak_bytes": v["peak_bytes"],
            "stage_bytes": None if v.get("base_bytes") is None else int(v["peak_bytes"]) - int(v["base_bytes"]),
        }
        for k, v in prof.items()
    }


def _total(stages: dict[str, dict[str, Any]], names: tuple[str, ...] | None = None) -> float:
    return sum(v["seconds"] for k, v in stages.items() if names is None or k in names)


def run_speed_bench(
    model: str | None = None,
    device: str = "cpu",
    width: int | None = None,
    request: DragRequest | None = None,
    overrides: dict[str, Any] | None = None,
    ablations: bool = False,
    log: Callable[[str], None] = print,
    methods: Sequence[str] = (),
    shape: str = "sd15",
) -> dict[str, Any]:
    """Run the benchmark and return its figures (what ``--json`` writes): ``reference``, ``dragkit`` (LoRA
    cached), ``dragkit_first`` (LoRA trained) and ``dragkit_reedit`` (LoRA and source cached) per-stage
    ``seconds``/``peak_bytes``/``stage_bytes``, the ``ratios``, the largest pixel difference of any dragkit output
    from the reference's, ``ablations`` when asked for, and ``methods``: one edit of each other diffusion preset
    named (as a user runs it: its own LoRA setting, trained when it trains one), with its stages and its whole
    time against the reference's."""
    from ..pipelines.diffusion import DragDiffusionPipeline

    if model is not None and shape != "sd15":
        raise ParameterError(f"--shape {shape} shapes the random model; --model names a model of its own")
    request = request or default_request()
    overrides = dict(overrides or {})
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    with tempfile.TemporaryDirectory(prefix="dragkit-speed-") as tmp:
        facts: dict[str, Any] = {"device": device, "dtype": str(dtype).replace("torch.", "")}
        if model is None:
            path, w = build_model(Path(tmp) / "model", device, width, shape)
            label = "SDXL" if shape == "sdxl" else "SD 1.5"
            facts["model"] = f"{label}-shaped, random weights, UNet width {w}"
            model_path = str(path)
        else:
            model_path = model
            facts["model"] = model
        pipe = DragDiffusionPipeline.from_pretrained(model_path, dtype=dtype).to(device)
        pipe.set_progress_bar_config(disable=True)
        facts["unet_parameters"] = sum(p.numel() for p in pipe.unet.parameters())
        facts["torch_threads"] = torch.get_num_threads()
        facts["image"] = list(request.size)
        with _cache_in(Path(tmp) / "cache"):
            runs: dict[str, Any] = {}
            # dragkit_first: a new image (LoRA trained); dragkit: LoRA from the disk cache, a new process's view
            # (no source cache); dragkit_reedit: the same image edited again in the same session (both cached)
            for name, recipe in (
                ("reference", "reference"),
                ("dragkit_first", "dragkit"),
                ("dragkit", "dragkit"),
                ("dragkit_reedit", "dragkit"),
            ):
                log(f"{name}: one edit ...")
                if name == "dragkit":
                    pipe.clear_source_cache()
                out = _edit(pipe, request, recipe, **overrides)
                runs[name] = {
                    "stages": _stages(out),
                    "steps": out.info["steps"],
                    "lora": out.info["lora"],
                    "source_cache": out.info["source_cache"],
                }
                runs[name]["image"] = out.image
        ref, ours, first, again = runs["reference"], runs["dragkit"], runs["dragkit_first"], runs["dragkit_reedit"]
        diff = max(
            int(np.abs(np.asarray(r["image"], np.int16) - np.asarray(ref["image"], np.int16)).max())
            for r in (ours, first, again)
        )
        ds = ("drag", "sampling")
        ratios = {
            "drag_and_sampling_time": _total(ref["stages"], ds) / _total(ours["stages"], ds),
            "whole_edit_time_lora_cached": _total(ref["stages"]) / _total(ours["stages"]),
            "whole_edit_time_lora_trained": _total(ref["stages"]) / _total(first["stages"]),
            "drag_and_sampling_time_reedit": _total(ref["stages"], ds) / _total(again["stages"], ds),
            "whole_edit_time_reedit": _total(ref["stages"]) / _total(again["stages"]),
            "drag_peak_memory": ours["stages"]["drag"]["peak_bytes"] / ref["stages"]["drag"]["peak_bytes"],
        }
        if ref["stages"]["drag"]["stage_bytes"] and ours["stages"]["drag"]["stage_bytes"] is not None:
            ratios["drag_stage_memory"] = ours["stages"]["drag"]["stage_bytes"] / ref["stages"]["drag"]["stage_bytes"]
        report: dict[str, Any] = {
            **facts,
            "overrides": overrides,
            **{k: {kk: vv for kk, vv in v.items() if kk != "image"} for k, v in runs.items()},
            "ratios": ratios,
            "output_max_pixel_difference": diff,
        }
        if methods:
            with _cache_in(Path(tmp) / "cache-methods"):  # each preset trains its own LoRA, as a new user's would
                report["methods"] = _methods(pipe, request, overrides, methods, _total(ref["stages"]), log)
        if ablations:
            report["ablations"] = _ablations(pipe, request, overrides, log)
    return report


def _methods(
    pipe: Any, request: DragRequest, overrides: dict[str, Any], methods: Sequence[str], reference: float, log: Any
) -> dict[str, Any]:
    """One edit of each named diffusion preset on the same model, image and points (no source cache). A method is
    ``NAME`` or ``NAME:k=v,k=v``: its own overrides on top of the shared ones (GoodDrag's ``drag_steps`` counts per
    phase, so a budget scaled for the reference is scaled for it by name)."""
    check_methods(methods)
    rows = {}
    for spec in methods:
        name, own = parse_method_spec(spec)
        log(f"{spec}: one edit ...")
        pipe.clear_source_cache()
        out = pipe(request, method=name, progress=False, **{**overrides, **own})
        stages = _stages(out)
        rows[spec] = {"stages": stages, "steps": out.info["steps"], "speedup_vs_reference": reference / _total(stages)}
    return rows


def check_methods(methods: Sequence[str]) -> None:
    """Every ``--method`` names a diffusion preset and valid overrides; raised before any work."""
    from ..methods import get_method

    for spec in methods:
        name, _ = parse_method_spec(spec)
        if get_method(name).engine != "diffusion":
            raise ParameterError(f"--method {name}: bench-speed times diffusion presets")


def _ablations(pipe: Any, request: DragRequest, overrides: dict[str, Any], log: Callable[[str], None]) -> list:
    """The optimizations one at a time, LoRA off: drag and sampling seconds, drag memory, and how far the output
    moved (mean absolute pixel difference from the baseline's)."""
    base = {**overrides, "lora": "none", "source_cache": False}  # each edit from scratch: one change at a time
    unmasked = DragRequest(request.image, request.handles, request.targets, prompt=request.prompt, seed=request.seed)
    baselines: dict[tuple[str, bool], Any] = {}
    rows = []
    for name, extra, no_mask, against, predicted in ABLATIONS:
        req = unmasked if no_mask else request
        if (against, no_mask) not in baselines:
            log(f"ablation baseline: {against} ({'no mask' if no_mask else 'mask'}) ...")
            baselines[against, no_mask] = _edit(pipe, req, against, **base)
        ref = baselines[against, no_mask]
        log(f"ablation {name} ...")
        out = pipe(req, progress=False, **base, **extra) if extra or against != "dragkit" else ref
        r, o = _stages(ref), _stages(out)
        diff = np.abs(np.asarray(out.image, np.float32) - np.asarray(ref.image, np.float32))
        rows.append(
            {
                "optimization": name,
                "against": against,
                "predicted": predicted,
                "mask": not no_mask,
                "drag_steps": [ref.info["steps"], out.info["steps"]],
                "drag_seconds": [r["drag"]["seconds"], o["drag"]["seconds"]],
                "sampling_seconds": [r["sampling"]["seconds"], o["sampling"]["seconds"]],
                "drag_speedup": r["drag"]["seconds"] / o["drag"]["seconds"],
                "sampling_speedup": r["sampling"]["seconds"] / o["sampling"]["seconds"],
                "drag_peak_bytes": [r["drag"]["peak_bytes"], o["drag"]["peak_bytes"]],
                "drag_stage_bytes": [r["drag"]["stage_bytes"], o["drag"]["stage_bytes"]],
                "output_mean_abs_difference": float(diff.mean()),
            }
        )
    return rows


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def format_report(report: dict[str, Any]) -> str:
    """The benchmark as Markdown tables (what the command prints)."""
    ref, ours, first = report["reference"], report["dragkit"], report["dragkit_first"]
    again = report["dragkit_reedit"]
    lines = [
        f"{report['model']} ({report['unet_parameters'] / 1e6:.1f} M UNet parameters), {report['device']} "
        f"{report['dtype']}, {report['torch_threads']} threads, image {report['image'][0]}x{report['image'][1]}",
        "",
        "| stage | reference s | dragkit s (LoRA cached) | dragkit s (LoRA trained) | dragkit s (re-edit) "
        "| reference peak MiB | dragkit peak MiB | reference stage MiB | dragkit stage MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def sec(run: dict[str, Any], k: str) -> str:
        return f"{run['stages'][k]['seconds'] if k in run['stages'] else 0:.2f}"

    for k in ref["stages"]:
        a, b = ref["stages"][k], ours["stages"].get(k)
        lines.append(
            f"| {k} | {a['seconds']:.2f} | {sec(ours, k)} | {sec(first, k)} | {sec(again, k)} "
            f"| {_mib(a['peak_bytes'])} | {_mib(b and b['peak_bytes'])} | {_mib(a['stage_bytes'])} "
            f"| {_mib(b and b['stage_bytes'])} |"
        )
    totals = " | ".join(f"{_total(r['stages']):.2f}" for r in (ref, ours, first, again))
    lines.append(f"| **total** | {totals} | | | | |")
    r = report["ratios"]
    lines += [
        "",
        f"drag steps: reference {ref['steps']}, dragkit {ours['steps']}; LoRA: {ref['lora']} / {first['lora']} / "
        f"{ours['lora']}; source cache of the re-edit: {again['source_cache']}; largest pixel difference of a "
        f"dragkit output from the reference's: {report['output_max_pixel_difference']}",
        "",
        "| ratio (reference / dragkit, time; dragkit / reference, memory) | measured | target |",
        "|---|---:|---:|",
        f"| drag + sampling time | {r['drag_and_sampling_time']:.2f}x | >= 3x |",
        f"| whole edit time, LoRA cached | {r['whole_edit_time_lora_cached']:.2f}x | >= 4x |",
        f"| whole edit time, LoRA trained | {r['whole_edit_time_lora_trained']:.2f}x | |",
        f"| drag + sampling time, re-edit (source cached) | {r['drag_and_sampling_time_reedit']:.2f}x | |",
        f"| whole edit time, re-edit (LoRA and source cached) | {r['whole_edit_time_reedit']:.2f}x | |",
        f"| drag peak memory (resident / allocated) | {r['drag_peak_memory']:.2f} | <= 0.6 |",
    ]
    if "drag_stage_memory" in r:
        lines.append(f"| drag stage's own memory (peak above its start) | {r['drag_stage_memory']:.2f} | |")
    if report.get("methods"):
        names = sorted({k for m in report["methods"].values() for k in m["stages"]} | set(ref["stages"]))
        lines += [
            "",
            "| preset | " + " | ".join(f"{k} s" for k in names) + " | total s | whole edit vs reference |",
            "|---|" + "---:|" * (len(names) + 2),
        ]

        def row(label: str, stages: dict[str, Any], speedup: float) -> str:
            cells = " | ".join(f"{stages[k]['seconds'] if k in stages else 0:.2f}" for k in names)
            return f"| {label} | {cells} | {_total(stages):.2f} | {speedup:.2f}x |"

        lines.append(row("reference recipe", ref["stages"], 1.0))
        lines += [row(name, m["stages"], m["speedup_vs_reference"]) for name, m in report["methods"].items()]
    if report.get("ablations"):
        lines += [
            "",
            "| optimization (LoRA off) | against | mask | predicted | drag | sampling | drag stage MiB (before -> "
            "after) | output mean abs diff |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for a in report["ablations"]:
            sb = a["drag_stage_bytes"]
            lines.append(
                f"| {a['optimization']} | {a['against']} | {'yes' if a['mask'] else 'no'} | {a['predicted']} "
                f"| {a['drag_speedup']:.2f}x | {a['sampling_speedup']:.2f}x | {_mib(sb[0])} -> {_mib(sb[1])} "
                f"| {a['output_mean_abs_difference']:.3f} |"
            )
    return "\n".join(lines)
