"""``dragkit app`` and ``dragkit demo``: the web app and the offline demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...core.errors import InputError, ParameterError
from ...core.limits import KEEP_SERVED_FILES
from ._app import app
from .common import _select_device


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
        from ..app.ui import launch
    except ImportError as e:
        raise ParameterError(f"the app needs gradio ({e.name} is missing): pip install 'dragkit[app]'") from None
    for d in model_dirs or []:
        if not d.is_dir():
            raise InputError(f"--model-dir {d}: no such folder")
    launch(
        host, port, share, concurrency, _select_device(device), model_dirs or [], time_limit, queue_size, keep_files
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="folder for the demo's files")] = Path("demo_out"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Real drag edits offline: a face from the bundled DCGAN dragged with dragkit-gan, then with dragkit on faces64
    (before/after, GIF, JSON; each half's MD before and after, measured independently)."""
    from ..demo import run_demo

    run_demo(out, progress=not quiet, echo=typer.echo)
