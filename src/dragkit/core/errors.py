"""Errors dragkit raises for mistakes a user can fix.

Every interface catches :class:`DragkitError` and shows its message on one line (the CLI exits with status 2,
the app shows it in the page). Anything else that escapes is a bug in dragkit.
"""

from __future__ import annotations


class DragkitError(ValueError):
    """A user mistake (bad points, an unreadable file, an unknown method, ...): the message names the value."""


class InputError(DragkitError):
    """A bad image, mask, point or path."""


class ParameterError(DragkitError):
    """An unknown parameter or method name, or a value out of its range."""


class OutputError(DragkitError):
    """A result that cannot be written: a read-only or missing folder, a full disk. Nothing partial is left."""


class ModelError(DragkitError):
    """A model that cannot be found or loaded (missing weights package, wrong file). ``offline`` is true when it
    is a hub id neither cached nor downloadable now: each interface then adds its own way out."""

    def __init__(self, message: str, *, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


class DivergedError(DragkitError):
    """The drag loop's loss became NaN or infinite (almost always a learning rate far too large)."""
