"""Shared plumbing for the optional models dragkit loads through transformers (SAM, CLIP): quiet loading and
one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


def looks_like_missing_folder(name: str) -> bool:
    """A name written as a path (absolute, ``./``, ``~``) that does not exist: say so rather than ask the hub."""
    return name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists()


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when empty), without a trailing period."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__).rstrip(".")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off while loading (our one-line errors say what matters)."""
    from transformers.utils import logging as tlogging

    verbosity, bars = tlogging.get_verbosity(), tlogging.is_progress_bar_enabled()
    tlogging.set_verbosity_error()
    tlogging.disable_progress_bar()
    try:
        yield
    finally:
        tlogging.set_verbosity(verbosity)
        if bars:
            tlogging.enable_progress_bar()
