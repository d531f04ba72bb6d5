"""The ``dragkit`` Typer application and its root help; the commands register on it from their modules."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # help paragraphs are reflowed to the terminal's width
)


def _version(value: bool) -> None:
    if value:
        from ...core import __version__

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
