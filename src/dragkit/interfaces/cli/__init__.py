"""The ``dragkit`` command line: ``edit``, ``demo``, ``bench``, ``eval``, ``bench-speed`` and ``app``.

User mistakes end with one line on stderr, ``dragkit: error: ...``, exit status 2, and no output file. The commands
live in their modules (:mod:`.edit`, :mod:`.measure`, :mod:`.serve`) and register on one Typer ``app``
(:mod:`._app`); :func:`main` is the console entry point.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import typer

from ...core.errors import DragkitError
from . import measure, serve  # noqa: F401 - their commands register on the app
from ._app import app
from .common import params_table, parse_drag
from .edit import default_method, edit

__all__ = ["app", "default_method", "edit", "main", "params_table", "parse_drag"]


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
