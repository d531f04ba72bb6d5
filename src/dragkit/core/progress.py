"""Progress that shows in a log as well as on a terminal.

On a terminal, tqdm's bars. When stderr is not a terminal (a log file, a CI job, ``nohup``), tqdm hides its bars
and a long edit would print nothing between loading and "wrote ...". With :func:`log_lines` on (the command line
turns it on there) every bar becomes a few plain lines instead: one when it starts, one every ``every`` seconds
with its count and elapsed time, one when it ends; and the profiler's stages print a line as they begin and end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

_LOG: dict[str, Any] = {"on": False, "every": 30.0, "stream": None}


def log_lines(on: bool = True, every: float | None = None, stream: Any = None) -> None:
    """Plain progress lines instead of bars (``stream``: default stderr; ``every``: seconds between lines, default
    ``$DRAGKIT_LOG_EVERY`` or 30)."""
    if every is None:
        every = float(os.environ.get("DRAGKIT_LOG_EVERY", "30"))
    _LOG.update(on=on, every=every, stream=stream)


def logging_lines() -> bool:
    return bool(_LOG["on"])


def say(text: str) -> None:
    """One progress line (only when :func:`log_lines` is on)."""
    if _LOG["on"]:
        stream = _LOG["stream"] or sys.stderr
        print(f"dragkit: {text}", file=stream, flush=True)


class LogBar:
    """tqdm's interface as used here (``update``, ``set_postfix``, ``total``, ``refresh``, ``close``, iteration),
    printing lines instead of drawing."""

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: int | None = None) -> None:
        self.iterable, self.desc, self.n = iterable, desc or "progress", 0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.postfix, self.regrown = total, "", False
        self.t0 = self.last = time.monotonic()
        say(f"{self.desc}: started" + (f" ({self.total} steps)" if self.total else ""))

    def _line(self, what: str) -> str:
        of = f"/{self.total}" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {what} {self.n}{of} in {time.monotonic() - self.t0:.0f} s{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= _LOG["every"]:
            self.last = now
            say(self._line("step"))

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in kw.items())

    def refresh(self) -> None:
        """The total changed (a schedule grew the budget): said the first time, then at most once per period (the
        periodic lines and the last one carry the new total too)."""
        now = time.monotonic()
        if not self.regrown or now - self.last >= _LOG["every"]:
            self.regrown, self.last = True, now
            say(f"{self.desc}: the budget is now {self.total} steps")

    def close(self) -> None:
        if self.t0 is not None:
            say(self._line("done,"))
            self.t0 = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable if self.iterable is not None else ():  # a tensor of timesteps has no truth
                yield item
                self.update(1)
        finally:
            self.close()


def progress_bar(iterable: Iterable | None = None, **kw: Any) -> Any:
    """tqdm(``iterable``, ``**kw``), or with :func:`log_lines` on and the bar not disabled outright, a
    :class:`LogBar`."""
    if _LOG["on"] and kw.get("disable") is not True:
        return LogBar(iterable, kw.get("desc"), kw.get("total"))
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)
