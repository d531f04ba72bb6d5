"""Resource guards: how large an image dragkit will decode and how many drag pairs one edit may hold.

Both have defaults and can be changed with an environment variable (every interface reads them here):

- ``DRAGKIT_MAX_PIXELS``: the largest image, in pixels (width x height), that is decoded. The size is read from
  the file's header first, so a decompression bomb (a small file that claims a huge image) is refused before any
  memory is spent on it. The default is sized for the machine: a thousandth of its memory in pixels (a decoded
  image and the float copies the preprocessing makes take a few hundred bytes per pixel at worst), at least
  16 MP and at most 100 MP.
- ``DRAGKIT_MAX_PAIRS``: the most handle/target pairs in one edit (default 64; DragBench's edits have at most 8).
"""

from __future__ import annotations

import os

from .errors import InputError

DEFAULT_MAX_PAIRS = 64
KEEP_SERVED_FILES = 3600  # seconds the web app keeps the pictures and bundles it served (dragkit app --keep-files)
MIN_DEFAULT_PIXELS = 16_000_000
MAX_DEFAULT_PIXELS = 100_000_000


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not every platform has these
        return None


def _from_env(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise InputError(f"{name}={raw!r}: expected a whole number") from None
    if value < 1:
        raise InputError(f"{name}={raw!r}: must be 1 or more")
    return value


def max_pixels() -> int:
    """The pixel budget: ``DRAGKIT_MAX_PIXELS`` or the machine's default (see the module's text)."""
    value = _from_env("DRAGKIT_MAX_PIXELS")
    if value is not None:
        return value
    memory = _memory_bytes()
    if memory is None:
        return MIN_DEFAULT_PIXELS
    return max(MIN_DEFAULT_PIXELS, min(MAX_DEFAULT_PIXELS, memory // 1000))


def max_pairs() -> int:
    """The most drag pairs in one edit: ``DRAGKIT_MAX_PAIRS`` or 64."""
    value = _from_env("DRAGKIT_MAX_PAIRS")
    return DEFAULT_MAX_PAIRS if value is None else value


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse an image over the pixel budget, naming it and the budget."""
    budget = max_pixels()
    if width * height > budget:
        raise InputError(
            f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of {budget:,}: resize it, or "
            "raise the limit with DRAGKIT_MAX_PIXELS"
        )
