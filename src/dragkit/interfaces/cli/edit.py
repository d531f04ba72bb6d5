"""``dragkit edit``: one drag edit of an image, and the method chosen when none is given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ...core.errors import InputError, ModelError, ParameterError
from ._app import app
from .common import _help_params, _select_device, _select_dtype, parse_drag


def default_method(image: Path, model: str | None) -> tuple[str, str]:
    """The method when none is given, and why: a GAN's for an image the face GAN made (its PNG's ``dragkit`` text
    says so: a result of a GAN method, or the demo's source) or with ``--model dcgan-faces``; otherwise ``dragkit``
    on a diffusion model (Stable Diffusion 1.5 unless ``--model`` names another)."""

    from ...methods import get_method

    if model is not None:
        if model == "dcgan-faces" or model.endswith((".pt", ".pth")):
            return "dragkit-gan", "--model names a GAN"
        if model.endswith(".pkl") or (Path(model) / "init_kwargs.json").is_file():
            return "draggan", "--model names a StyleGAN generator: DragGAN, as its own code runs it"
        return "dragkit", "dragkit's recipe on the diffusion model --model names (the fastest preset)"
    made_by_gan = False
    try:
        from PIL import Image

        with Image.open(image) as im:
            text = json.loads(getattr(im, "text", {}).get("dragkit", "{}"))
        made_by_gan = text.get("source") == "dcgan-faces" or get_method(str(text.get("method"))).engine == "gan"
    except Exception:  # no PNG, no text, or not ours: a photo
        made_by_gan = False
    if made_by_gan:
        return "dragkit-gan", "the image came from dragkit's face GAN (its PNG says so)"
    return (
        "dragkit",
        "a photo goes to the diffusion engine: dragkit's recipe (one warp, no LoRA, no optimization) on Stable "
        "Diffusion 1.5",
    )


@app.command()
def edit(
    image: Annotated[Path | None, typer.Argument(help="the image to edit", show_default=False)] = None,
    drag: Annotated[list[str] | None, typer.Option("--drag", help="X1,Y1:X2,Y2 — a handle and its target")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="OUT.png (OUT.json is written beside it)")
    ] = None,
    mask: Annotated[str | None, typer.Option("--mask", help="mask image (white = may change), none, or auto")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="text describing the image (diffusion)")] = "",
    edit_prompt: Annotated[
        str,
        typer.Option("--edit-prompt", help="text saying what the edit should achieve (CLIPDrag's CLIP guidance)"),
    ] = "",
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="method preset (default: dragkit on a diffusion model for a photo; dragkit-gan for an image made by "
            "dragkit's face GAN or with --model dcgan-faces)",
            show_default=False,
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="model id or path (default: the method's)")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="NAME=VALUE, any parameter")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 42,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or mps")] = "cpu",
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto (float16 on cuda/mps, float32 on cpu), float32, float16, bfloat16")
    ] = "auto",
    lora: Annotated[str | None, typer.Option("--lora", help="diffusion: none, train, or a saved LoRA's path")] = None,
    vae: Annotated[
        str | None,
        typer.Option(
            "--vae",
            help="diffusion: a VAE (hub id or folder) instead of the model's, e.g. madebyollin/sdxl-vae-fp16-fix "
            "(SDXL's own runs in float32 under float16), or TAESD, madebyollin/taesd (decodes many times faster)",
        ),
    ] = None,
    unet: Annotated[
        str | None,
        typer.Option(
            "--unet",
            help="diffusion: a UNet (hub id, or a folder of one or of a pipeline) instead of the model's, e.g. "
            "FastDrag's LCM-distilled SimianLuo/LCM_Dreamshaper_v7 (--set lcm_guidance=7.5 feeds its guidance "
            "embedding)",
        ),
    ] = None,
    num_results: Annotated[
        int | None,
        typer.Option(
            "--num-results",
            min=1,
            help="luciddrag: this many results, best first: OUT.png, OUT.1.png, ... (one per intention, then seed "
            "variants)",
        ),
    ] = None,
    llm_url: Annotated[
        str | None,
        typer.Option(
            "--llm-url",
            help="luciddrag: an OpenAI-compatible endpoint that proposes the intentions, e.g. "
            "http://127.0.0.1:8000/v1 (key from DRAGKIT_LLM_KEY or OPENAI_API_KEY; default: the built-in geometry "
            "reasoner)",
        ),
    ] = None,
    llm_model: Annotated[str | None, typer.Option("--llm-model", help="luciddrag: the endpoint's model name")] = None,
    profile: Annotated[bool, typer.Option("--profile", help="print time and peak memory per stage")] = False,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit",
            min=0.001,
            help="stop LoRA training, GAN inversion and the drag after this many seconds and sample the edit so far "
            "(as the app's limit)",
        ),
    ] = None,
    gan_seed: Annotated[
        int | None,
        typer.Option(
            "--gan-seed",
            min=0,
            help="GAN methods: edit the generator's own image for this seed (on a StyleGAN, the one DragGAN shows "
            "for it) instead of fitting IMAGE, which is then left out; the source is written as OUT_source.png",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    help_params: Annotated[
        bool,
        typer.Option(
            "--help-params",
            help="list every parameter by part, the common ones marked (with --method: its own) and exit",
        ),
    ] = False,
) -> None:
    """Drag the content under each handle to its target; writes OUT.png and OUT.json.

    Which method: for a photo, dragkit (the default; seconds) or dragdiffusion (the reference; minutes), on
    Stable Diffusion. For a 64-px face: --model faces64 (offline). For a face from the bundled GAN: dragkit-gan
    (the default for the demo's images) or draggan.

    Which model: diffusion methods use Stable Diffusion 1.5, downloaded on first use (several GB), unless --model
    names another (a hub id, a folder or a .safetensors file; SDXL and SD 2.x too). GAN methods use the bundled
    dcgan-faces (no download) unless --model names a StyleGAN2 .pkl (DragGAN's downloads; read safely, never run)
    or DCGAN weights; --gan-seed N edits the generator's own image for seed N instead of fitting IMAGE.

    Where it goes: -o OUT.png, with OUT.json beside it (every parameter, the trajectory, timings).

    Methods: dragkit, dragdiffusion, stabledrag, adaptivedrag, clipdrag, luciddrag, gooddrag, dragnoise, freedrag,
    regiondrag, fastdrag (diffusion); inpaint4drag (an SD inpainting checkpoint); dragkit-gan, draggan,
    stabledrag-gan, adaptivedrag-gan (GAN). --help-params lists every parameter by part.
    """
    from ...core.params import parse_assignment
    from ...core.progress import log_lines
    from ...methods import get_method

    if help_params:
        _help_params(method)
    log_lines(not quiet and not sys.stderr.isatty())  # in a log: a line per stage and periodic ones, not bars

    if image is None and gan_seed is None:
        raise InputError("missing IMAGE: dragkit edit IMAGE --drag X1,Y1:X2,Y2 -o OUT.png (or --gan-seed N)")
    if image is not None and gan_seed is not None:
        raise InputError(f"IMAGE {image} and --gan-seed {gan_seed}: edit one or the other")
    if output is None:
        raise InputError("missing -o OUT.png: where to write the result")
    if not drag:
        raise InputError("no --drag given: add at least one, e.g. --drag 40,44:46,44")
    chosen = None
    if method is None and gan_seed is not None:
        method, why = (
            ("draggan", "--gan-seed on a StyleGAN")
            if model
            and model != "dcgan-faces"
            and (model.endswith(".pkl") or (Path(model) / "init_kwargs.json").is_file())
            else ("dragkit-gan", "--gan-seed edits a GAN's own image")
        )
        chosen = {"method": method, "why": why}
    elif method is None:
        assert image is not None
        method, why = default_method(image, model)
        chosen = {"method": method, "why": why}
    m = get_method(method)
    if gan_seed is not None and m.engine != "gan":
        raise ParameterError(f"--gan-seed {gan_seed}: {method} runs on the {m.engine} engine; it is for GAN methods")
    overrides: dict[str, Any] = dict(parse_assignment(s) for s in sets or [])
    if lora is not None:
        overrides["lora"] = lora
    # None: the method's own default (``auto`` for AdaptiveDrag's presets); none/auto given explicitly override it
    mask_spec = overrides.pop("mask", None) if mask is None else mask
    m.resolve(overrides)  # every name and value checked before any work
    guided = m.engine == "diffusion" and m.resolve(overrides)["sampler"] == "guidance"
    for flag, value in (("--num-results", num_results), ("--llm-url", llm_url), ("--llm-model", llm_model)):
        if value is not None and not guided:
            raise ParameterError(f"{flag}: only for methods that guide the sampling (luciddrag), not {method}")
    if (llm_url is None) != (llm_model is None):
        raise ParameterError("--llm-url and --llm-model go together: the endpoint and the model name to ask")
    from ...core.types import DragRequest
    from ...engines.gan.style_engine import is_stylegan_path
    from ...utils.io import check_output_path, load_image, load_mask, save_results, write_png

    out_png = check_output_path(output)
    dev = _select_device(device)
    torch_dtype = _select_dtype(dtype, dev)
    pairs = [parse_drag(d) for d in drag]
    if m.engine == "gan" and not (model and model != "dcgan-faces" and is_stylegan_path(model)):
        if dtype not in ("auto", "float32"):
            raise ParameterError(f"--dtype {dtype}: the DCGAN runs in float32 (float16/bfloat16: a StyleGAN .pkl)")
        torch_dtype = None  # a StyleGAN on a GPU: float16 by default, as NVIDIA's and DragGAN's code run theirs
    if vae is not None and m.engine != "diffusion":
        raise ParameterError(f"--vae: {method} runs on the {m.engine} engine, which has no VAE")
    if unet is not None and m.engine != "diffusion":
        raise ParameterError(f"--unet: {method} runs on the {m.engine} engine, which has no UNet")
    if gan_seed is None:
        assert image is not None
        src = load_image(image)
        pipe = _load(m.engine, model, dev, torch_dtype, quiet, (vae, unet), method, chosen)
    else:  # the generator's own image for the seed, and the exact code that made it (no fit)
        pipe = _load(m.engine, model, dev, torch_dtype, quiet, (vae, unet), method, chosen)
        sample = pipe.generate(gan_seed)
        src = sample.image
        overrides["code"] = sample.code
        source_png = out_png.with_name(out_png.stem + "_source.png")
        write_png(source_png, src, {"dragkit": json.dumps({"source": str(model or "dcgan-faces"), "seed": gan_seed})})
    mask_arr = None
    if mask_spec in ("none", "", "auto"):
        overrides["mask"] = mask_spec or "none"  # auto: superpixels of the model's own features, saved beside
    elif mask_spec is not None:
        mask_arr = load_mask(mask_spec, src.size)
    req = DragRequest(
        src,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        mask=mask_arr,
        prompt=prompt,
        seed=seed,
        edit_prompt=edit_prompt,
    )
    if num_results is not None or llm_url is not None:  # LucidDrag's driver options
        from ...methods.drivers import GuidanceOptions
        from ...parts.intentions import LLMReasoner

        llm = LLMReasoner(llm_url, str(llm_model)) if llm_url is not None else None
        overrides["options"] = GuidanceOptions(num_results=num_results, llm=llm)
    if time_limit is not None:
        import time

        deadline = time.monotonic() + time_limit
        overrides["cancel"] = lambda: time.monotonic() > deadline
    results = pipe(req, method=method, progress=not quiet, **overrides)
    results = results if isinstance(results, list) else [results]
    if time_limit is not None and any(r.info.get("stop_reason") == "cancelled" for r in results):
        for r in results:
            r.info["time_limit"] = time_limit
    for result in results:
        if mask_arr is not None:
            result.params["mask"] = str(mask_spec)
        if chosen is not None:  # what the user did not say, and why it was chosen
            result.info["defaults_chosen"] = {**chosen, "model": result.info.get("model", model)}
    written = save_results(results, out_png)
    if profile:
        from ...utils.profiler import format_profile

        typer.echo(format_profile(results[0].info["profile"]))
    for result, (png, js) in zip(results, written, strict=True):
        info = result.info
        if "intention" in info:  # guided sampling: no steps, no tracking; say what the result means instead
            it = info["intention"]
            what = f"intention {it['kind']} ({it['confidence']:.2f}): {it['target_prompt']!r}"
            if info.get("result", {}).get("variant"):
                what += f", seed variant {info['result']['variant']}"
            if "semantic_guidance" in info:
                what += f" [semantic guidance {info['semantic_guidance']}]"
            typer.echo(f"wrote {png} and {js}: {what}")
        else:
            final = ", ".join(f"({x:g}, {y:g})" for x, y in result.handles)
            fit = f", inversion PSNR {info['inversion_psnr']:.1f} dB" if "inversion_psnr" in info else ""
            if "time_limit" in info:
                fit += f"; stopped at --time-limit {info['time_limit']:g} s"
            if "step_budget" in info:
                b = info["step_budget"]
                fit += (
                    f"; the adaptive schedule grew the budget from {b['asked']} to {b['final']} steps (cap {b['cap']})"
                )
            chose = f" [no --method: {method}, {chosen['why']}]" if chosen else ""
            typer.echo(
                f"wrote {png} and {js}: {info['steps']} steps ({info['stop_reason']}), "
                f"final handles {final}{fit}, {result.timings['total']:.1f} s{chose}"
            )
    if len(results) > 1 or "intention" in results[0].info:
        typer.echo(f"{len(results)} result(s) in {results[0].timings['total']:.1f} s")


def _load(engine: str, model, dev, torch_dtype, quiet: bool, swaps, method: str, chosen) -> Any:
    """The method's pipeline (``swaps``: the ``--vae`` and ``--unet`` replacing the model's); a model that is not
    here and cannot be downloaded says what would work offline."""
    from ...pipelines import load_pipeline

    try:
        return load_pipeline(engine, model, dev, torch_dtype, quiet, vae=swaps[0], unet=swaps[1])
    except ModelError as e:
        if not e.offline:
            raise
        why = (
            f" (no --method was given, so {method} on the default model)"
            if chosen is not None and model is None
            else ""
        )
        raise ModelError(
            f"{e}: --model FOLDER{why}; or, with no download: --model faces64 for a 64-px face, --method draggan "
            "for the face GAN"
        ) from None
