"""The ``dragkit`` command line: ``edit``, ``demo``, ``bench``, ``eval`` and ``app``.

User mistakes end with one line on stderr, ``dragkit: error: ...``, exit status 2, and no output file.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import DragkitError, InputError, ModelError, ParameterError
from ..core.limits import KEEP_SERVED_FILES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # help paragraphs are reflowed to the terminal's width
)


def _version(value: bool) -> None:
    if value:
        from ..core import __version__

        typer.echo(f"dragkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="print the version and exit")
    ] = False,
) -> None:
    """Drag-based image editing: click handle points and their targets; dragkit moves the content there.

    Start with dragkit demo (offline, real weights), then: dragkit edit IMAGE --drag X1,Y1:X2,Y2 -o OUT.png

    Which method: a photo goes to dragkit's recipe on Stable Diffusion 1.5 (the default); a 64-px face to
    --model faces64; a face from the bundled GAN to dragkit-gan (chosen by itself for the demo's images).
    dragkit edit --help lists every method.

    Which model, and downloads: Stable Diffusion 1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5, several GB) is
    downloaded on first use, or --model names another (hub id, folder, .safetensors; SDXL and SD 2.x too).
    faces64 and the face GAN ship with dragkit: no download.

    Where results go: edit writes OUT.png and OUT.json (every parameter, the trajectory, timings); demo a folder
    (-o); bench a run folder that eval measures.
    """


_NUM = r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*"
_DRAG = re.compile(rf"^{_NUM},{_NUM}:{_NUM},{_NUM}$")


def parse_drag(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``"X1,Y1:X2,Y2"`` → ((x1, y1), (x2, y2)) in image pixels."""
    m = _DRAG.match(text)
    if not m:
        raise InputError(f"--drag {text!r}: expected X1,Y1:X2,Y2 (handle x,y then target x,y), e.g. 40,44:46,44")
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    return (x1, y1), (x2, y2)


# The order --help-params lists the parts in: the loop and its parts first, engine internals last.
_SECTIONS = (
    "loop", "supervision", "tracker", "schedule", "terms", "mask", "warp", "composite", "features", "inversion",
    "latent", "sampling", "lora", "guided sampling", "closs", "clip guidance", "fusion", "speed and memory",
)  # fmt: skip


def params_table(method: str | None = None, width: int | None = None) -> str:
    """Every parameter grouped by the part that reads it, ``*`` before the ones a user commonly changes, each with
    its meaning and default: the registry's and every preset that sets another (``method``: that method's only,
    and only its engine's parameters). Wrapped to ``width`` (the terminal's; 100 when not a terminal)."""
    import shutil
    import textwrap

    from ..core import params as P
    from ..methods import METHODS, get_method

    width = max(60, min(width or shutil.get_terminal_size((100, 24)).columns, 120))
    chosen = get_method(method) if method else None
    left = 2 + max(len(n) for n in P.REGISTRY) + 2
    wrap = textwrap.TextWrapper(width=width, subsequent_indent=" " * left)

    order = {name: i for i, name in enumerate(_SECTIONS)}
    params = [p for p in P.REGISTRY.values() if chosen is None or p.read_on(chosen.engine)]
    params.sort(key=lambda p: (order.get(p.section, len(order)), p.section, not p.common, p.name))
    lines = ["Parameters: --set NAME=VALUE, the same names in Python and OUT.json. * = commonly changed."]
    if chosen is None:
        lines.append("Each: its meaning, its default and the presets that set another (--method NAME: one method's).")
    else:
        lines.append(f"The values {chosen.name} ({chosen.engine}) uses, its engine's parameters only.")
    lines = [line for text in lines for line in textwrap.wrap(text, width)]
    section = None
    for p in params:
        if p.section != section:
            section = p.section
            owners = {q.owner for q in params if q.section == section}
            only = owners.pop() if len(owners) == 1 else ""
            engine_only = chosen is None and only.startswith("engine:")
            lines += ["", section + (f" ({only.removeprefix('engine:')} engine only)" if engine_only else "")]
        meaning = p.help + (f" [{'|'.join(p.choices)}]" if p.choices else "")
        if chosen is not None:
            values = f"{chosen.name}: {chosen.defaults.get(p.name, p.default)}"
        else:
            others = [
                f"{m.name} {m.defaults[p.name]}"
                for m in METHODS.values()
                if p.name in m.defaults and m.defaults[p.name] != p.default and p.read_on(m.engine)
            ]
            values = f"default {p.default}" + ("; " + ", ".join(others) if others else "")
        head = f"{'*' if p.common else ' '} {p.name}".ljust(left)
        lines += wrap.wrap(head + meaning)
        lines += wrap.wrap(" " * left + values)
    return "\n".join(lines)


def _help_params(method: str | None) -> None:
    typer.echo(params_table(method))
    raise typer.Exit()


def _select_device(name: str) -> str:
    import torch

    if name == "cpu":
        return name
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("--device cuda: torch sees no CUDA device here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError("--device mps: torch sees no Apple MPS device here")
    if name not in ("cuda", "mps"):
        raise ParameterError(f"--device {name!r}: choose cpu, cuda or mps")
    return name


def _select_dtype(name: str, device: str):
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if name not in table:
        raise ParameterError(f"--dtype {name!r}: choose auto, float32, float16 or bfloat16")
    if name == "bfloat16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ParameterError("--dtype bfloat16: this CUDA device does not support it")
    return table[name]


def default_method(image: Path, model: str | None) -> tuple[str, str]:
    """The method when none is given, and why: a GAN's for an image the face GAN made (its PNG's ``dragkit`` text
    says so: a result of a GAN method, or the demo's source) or with ``--model dcgan-faces``; otherwise ``dragkit``
    on a diffusion model (Stable Diffusion 1.5 unless ``--model`` names another)."""
    import json

    from ..methods import get_method

    if model is not None:
        if model == "dcgan-faces" or model.endswith((".pt", ".pth")):
            return "dragkit-gan", "--model names a GAN"
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
            "(SDXL's own runs in float32 under float16)",
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
    dcgan-faces: no download.

    Where it goes: -o OUT.png, with OUT.json beside it (every parameter, the trajectory, timings).

    Methods: dragkit, dragdiffusion, stabledrag, adaptivedrag, clipdrag, luciddrag, gooddrag, fastdrag (diffusion);
    dragkit-gan, draggan, stabledrag-gan, adaptivedrag-gan (GAN). --help-params lists every parameter by part.
    """
    from ..core.params import parse_assignment
    from ..core.progress import log_lines
    from ..methods import get_method

    if help_params:
        _help_params(method)
    log_lines(not quiet and not sys.stderr.isatty())  # in a log: a line per stage and periodic ones, not bars

    if image is None:
        raise InputError("missing IMAGE: dragkit edit IMAGE --drag X1,Y1:X2,Y2 -o OUT.png")
    if output is None:
        raise InputError("missing -o OUT.png: where to write the result")
    if not drag:
        raise InputError("no --drag given: add at least one, e.g. --drag 40,44:46,44")
    chosen = None
    if method is None:
        method, why = default_method(image, model)
        chosen = {"method": method, "why": why}
    m = get_method(method)
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
    from ..core.types import DragRequest
    from ..utils.io import check_output_path, load_image, load_mask, save_results

    out_png = check_output_path(output)
    dev = _select_device(device)
    torch_dtype = _select_dtype(dtype, dev)
    src = load_image(image)
    pairs = [parse_drag(d) for d in drag]
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
    if m.engine == "gan" and dtype not in ("auto", "float32"):
        raise ParameterError(f"--dtype {dtype}: the GAN engine runs in float32")
    if vae is not None and m.engine != "diffusion":
        raise ParameterError(f"--vae: {method} runs on the {m.engine} engine, which has no VAE")
    from ..pipelines import load_pipeline

    try:
        pipe: Any = load_pipeline(m.engine, model, dev, torch_dtype, quiet, vae=vae)
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
    if num_results is not None or llm_url is not None:  # LucidDrag's driver options
        from ..methods.drivers import GuidanceOptions
        from ..parts.intentions import LLMReasoner

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
        from ..utils.profiler import format_profile

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


@app.command()
def bench(
    dataset: Annotated[Path, typer.Argument(help="DragBench, Drag100 or a dragkit run folder", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="RUNDIR: where the run's results go")],
    method: Annotated[str, typer.Option("--method", help="method preset")] = "identity",
    model: Annotated[str | None, typer.Option("--model", help="model id or path (default: the method's)")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="NAME=VALUE, any parameter")] = None,
    categories: Annotated[
        list[str] | None, typer.Option("--categories", help="only these categories (repeat, or comma-separated)")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the first N samples (id order)")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 42,
    device: Annotated[
        str,
        typer.Option("--device", help="auto (cuda when there is one), cpu, cuda or mps; launched: one per process"),
    ] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, float16, bfloat16")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run a method on every sample of a dataset into RUNDIR; rerun the same command to resume.

    Spread over processes: accelerate launch --multi_gpu --num_processes N -m dragkit bench ... (GPUs), or
    torchrun --standalone --nproc-per-node N -m dragkit bench ... (CPU processes)."""
    from ..bench.runner import run_bench
    from ..core.params import parse_assignment

    overrides: dict[str, Any] = dict(parse_assignment(s) for s in sets or [])
    cats = [c.strip() for item in categories or [] for c in item.split(",") if c.strip()]
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = _select_device(device)
    s = run_bench(
        dataset,
        method,
        output,
        overrides=overrides,
        model=model,
        device=dev,
        dtype=_select_dtype(dtype, dev),
        categories=cats or None,
        limit=limit,
        seed=seed,
        progress=not quiet,
        echo=lambda m: typer.echo(m, err=True),
    )
    who = f"process {s.rank + 1} of {s.world}: " if s.world > 1 else ""
    typer.echo(
        f"{who}{s.ran} samples run, {s.failed} failed, {s.done_before} done before; {s.total} in this share; "
        f"{s.seconds:.1f} s; results in {output}"
    )
    if s.failed:
        typer.echo(f"dragkit: {s.failed} samples failed (error.json in their folders); rerun to retry them", err=True)
        raise typer.Exit(1)


@app.command("eval")
def eval_(
    runs: Annotated[list[Path], typer.Argument(help="RUNDIR (with --compare: two or more)", show_default=False)],
    compare: Annotated[bool, typer.Option("--compare", help="a side-by-side table of evaluated runs")] = False,
    md: Annotated[str, typer.Option("--md", help="MD features: dift (official), alex (offline), or both")] = (
        "dift,alex"
    ),
    dift_model: Annotated[
        str, typer.Option("--dift-model", help="DIFT's SD checkpoint (hub id or folder)")
    ] = "stabilityai/stable-diffusion-2-1",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or mps")] = "cpu",
    gscore_url: Annotated[
        str | None, typer.Option("--gscore-url", help="an OpenAI-compatible endpoint for the GScore judge (off)")
    ] = None,
    gscore_model: Annotated[str | None, typer.Option("--gscore-model", help="the judge's model name")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Measure a run (MD, IF, DAI, time, memory; per category): writes RUNDIR/metrics.json and metrics.md."""
    from ..bench.evaluate import GScoreJudge, compare_markdown, evaluate_run, metrics_markdown

    if compare:
        if len(runs) < 2:
            raise InputError("--compare needs two run folders or more")
        typer.echo(compare_markdown(runs), nl=False)
        return
    if len(runs) != 1:
        raise InputError(f"eval measures one run at a time ({len(runs)} given); use --compare for a table of several")
    if (gscore_url is None) != (gscore_model is None):
        raise ParameterError("--gscore-url and --gscore-model go together")
    judge = GScoreJudge(gscore_url, gscore_model) if gscore_url and gscore_model else None
    features = [m.strip() for m in md.split(",") if m.strip()]
    metrics = evaluate_run(
        runs[0],
        md=features,
        dift_model=dift_model,
        device=_select_device(device),
        judge=judge,
        progress=not quiet,
        echo=lambda m: typer.echo(m, err=True),
    )
    typer.echo(metrics_markdown(metrics), nl=False)
    typer.echo(f"wrote {runs[0] / 'metrics.json'} and {runs[0] / 'metrics.md'}")


@app.command("app")
def app_(
    host: Annotated[str, typer.Option("--host", help="address to serve on (127.0.0.1: this machine only)")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="port (default: the first free one from 7860; 0: any free one)"),
    ] = None,
    share: Annotated[
        bool, typer.Option("--share", help="also open a public gradio.live link (off by default)")
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="edits run at once; others queue")] = 1,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or mps")] = "cpu",
    model_dirs: Annotated[
        list[Path] | None,
        typer.Option(
            "--model-dir",
            help="a folder whose models the page may name (repeatable); other local paths are refused",
        ),
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit",
            min=0.001,
            help="stop each edit's LoRA training, GAN inversion and drag after this many seconds (the edit so far)",
        ),
    ] = None,
    queue_size: Annotated[
        int, typer.Option("--queue-size", min=1, help="edits that may wait; more are refused ('queue is full')")
    ] = 64,
    keep_files: Annotated[
        int, typer.Option("--keep-files", min=1, help="seconds the pictures and bundles served are kept on disk")
    ] = KEEP_SERVED_FILES,
) -> None:
    """The web app: upload or generate an image, click handles and targets, paint a mask, run, download."""
    try:
        from .app.ui import launch
    except ImportError as e:
        raise ParameterError(f"the app needs gradio ({e.name} is missing): pip install 'dragkit[app]'") from None
    for d in model_dirs or []:
        if not d.is_dir():
            raise InputError(f"--model-dir {d}: no such folder")
    launch(
        host, port, share, concurrency, _select_device(device), model_dirs or [], time_limit, queue_size, keep_files
    )


@app.command("bench-speed")
def bench_speed(
    model: Annotated[
        str | None, typer.Option("--model", help="model id or path (default: SD 1.5-shaped random weights)")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (cuda when there is one), cpu, cuda")] = "auto",
    width: Annotated[
        int | None, typer.Option("--width", min=8, help="random model's first UNet width (default 64 CPU, 320 GPU)")
    ] = None,
    shape: Annotated[
        str, typer.Option("--shape", help="random model's layout: sd15, or sdxl (two text encoders, 1024 px)")
    ] = "sd15",
    image: Annotated[Path | None, typer.Option("--image", help="your image (default: a DCGAN face at 512)")] = None,
    drag: Annotated[list[str] | None, typer.Option("--drag", help="HX,HY:TX,TY (with --image)")] = None,
    mask_spec: Annotated[str | None, typer.Option("--mask", help="mask image (with --image)")] = None,
    prompt: Annotated[str, typer.Option("--prompt")] = "",
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="NAME=VALUE for every edit, e.g. lora_steps=20")
    ] = None,
    ablations: Annotated[bool, typer.Option("--ablations", help="also each optimization on its own")] = False,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="also one edit of this diffusion preset, as a user runs it: NAME or NAME:k=v,k=v (repeatable)",
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """One DragDiffusion edit twice in one process: DragDiffusion's reference recipe, then dragkit's default path
    (LoRA trained, then cached); per-stage time and peak memory, and their ratios."""
    from ..bench.speed import check_methods, format_report, run_speed_bench
    from ..core.params import parse_assignment
    from ..core.types import DragRequest
    from ..utils.io import check_output_path, load_image, load_mask, write_json

    overrides: dict[str, Any] = dict(parse_assignment(x) for x in sets or [])
    if json_out is not None:
        check_output_path(json_out, suffix=".json")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = _select_device(device)
    req = None
    if image is not None:
        if not drag:
            raise InputError("--image needs at least one --drag HX,HY:TX,TY")
        src = load_image(image)
        pairs = [parse_drag(d) for d in drag]
        m = load_mask(mask_spec, src.size) if mask_spec else None
        req = DragRequest(src, [p[0] for p in pairs], [p[1] for p in pairs], mask=m, prompt=prompt)
    elif drag or mask_spec:
        raise InputError("--drag and --mask go with --image (the default edit has its own)")
    check_methods(methods or [])  # an unknown name or value fails before any work
    report = run_speed_bench(
        model,
        dev,
        width,
        req,
        overrides,
        ablations,
        log=lambda msg: typer.echo(f"dragkit: {msg}", err=True),
        methods=methods or [],
        shape=shape,
    )
    typer.echo(format_report(report))
    if json_out is not None:
        write_json(json_out, report)
        typer.echo(f"figures in {json_out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="folder for the demo's files")] = Path("demo_out"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Real drag edits offline: a face from the bundled DCGAN dragged with dragkit-gan, then with dragkit on faces64
    (before/after, GIF, JSON; each half's MD before and after, measured independently)."""
    from .demo import run_demo

    run_demo(out, progress=not quiet, echo=typer.echo)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that writes in progress clean up after themselves."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning user mistakes into one line and exit status 2. Ctrl-C (130)
    and SIGTERM (143) stop it between writes: every file is whole or absent (written atomically)."""
    logging.basicConfig(level=logging.WARNING, format="dragkit: %(message)s")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(args=argv, standalone_mode=True)
    except DragkitError as e:
        _close_bars()
        typer.echo(f"dragkit: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _close_bars()
        typer.echo("dragkit: interrupted; no partial output written", err=True)
        _stop(130)
    except _Terminated:
        _close_bars()
        typer.echo("dragkit: terminated; no partial output written", err=True)
        _stop(143)


def _close_bars() -> None:
    """Close the progress bars an error left open and, on a terminal, blank the line, so that the error's line
    starts a line of its own: a bar interrupted while it was being drawn would otherwise carry the message at its
    end (found by the SIGTERM test on a loaded machine)."""
    import shutil

    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
        sys.stderr.flush()


def _stop(status: int) -> None:
    """Exit with ``status`` now that the main thread has cleaned up its writes. Other threads may still be inside
    torch (the app's edit thread): the cleanup registered with ``atexit`` runs, then the process ends without
    tearing down torch's C++ state under them, which aborts the process ("terminate called without an active
    exception", exit −6 instead of ``status``; found by the app's SIGTERM test)."""
    import atexit
    import os

    if threading.active_count() == 1:  # nothing else running: the ordinary exit
        sys.exit(status)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
