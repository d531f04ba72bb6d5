"""``dragkit bench``, ``eval`` and ``bench-speed``: a method over a dataset, a run measured, an edit timed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ...core.errors import InputError, ParameterError
from ._app import app
from .common import _select_device, _select_dtype, parse_drag


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
    from ...bench.runner import run_bench
    from ...core.params import parse_assignment

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


@app.command("gan-set")
def gan_set(
    output: Annotated[Path, typer.Argument(help="DIR: the drag set (a dataset to bench)", show_default=False)],
    model: Annotated[
        str | None, typer.Option("--model", help="the generator: dcgan-faces (default), a StyleGAN2 .pkl or folder")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=100_000, help="drags: one per seed")] = 20,
    first_seed: Annotated[int, typer.Option("--first-seed", min=0, help="the first seed")] = 0,
    handles: Annotated[str, typer.Option("--handles", help="random (anywhere, flat regions too) or distinctive")] = (
        "random"
    ),
    length: Annotated[
        str | None, typer.Option("--length", help="LO,HI: drag lengths in px (default 6-20 %% of the side)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Make a drag set from a GAN: the generator's image for each seed with a seeded drag on it. dragkit bench runs
    any method on it; a GAN method on the same generator edits each seed's own code (no fit)."""
    from ...bench.gan_sets import make_gan_set

    span = None
    if length is not None:
        try:
            lo, hi = (float(v) for v in length.split(","))
        except ValueError:
            raise InputError(f"--length {length!r}: expected LO,HI in pixels, e.g. 8,24") from None
        span = (lo, hi)
    make_gan_set(
        output,
        model,
        range(first_seed, first_seed + count),
        handles,
        span,
        progress=not quiet,
        echo=lambda m: typer.echo(m),
    )


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
    realism_reference: Annotated[
        str,
        typer.Option(
            "--realism-reference",
            help="realism judged by each source alone (none: photos) or also by real faces (dcgan-faces: 64-px faces)",
        ),
    ] = "none",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Measure a run (MD, IF, DAI, realism, time, memory; per category): writes RUNDIR/metrics.json and metrics.md."""
    from ...bench.evaluate import GScoreJudge, compare_markdown, evaluate_run, metrics_markdown

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
        realism_reference=realism_reference,
        progress=not quiet,
        echo=lambda m: typer.echo(m, err=True),
    )
    typer.echo(metrics_markdown(metrics), nl=False)
    typer.echo(f"wrote {runs[0] / 'metrics.json'} and {runs[0] / 'metrics.md'}")


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
    from ...bench.speed import check_methods, format_report, run_speed_bench
    from ...core.params import parse_assignment
    from ...core.types import DragRequest
    from ...utils.io import check_output_path, load_image, load_mask, write_json

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
