"""Per-stage wall time and peak memory of an edit (``dragkit edit --profile`` prints the table).

Peak memory is the device allocator's peak on CUDA (``torch.cuda.max_memory_allocated``, reset at each stage);
on the CPU it is the process's peak resident set size within the stage (Linux: ``VmHWM`` from
``/proc/self/status``, reset through ``/proc/self/clear_refs``; elsewhere the peak since the process started,
marked as such).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..core.progress import say


def _read_status(field: str) -> int | None:
    """A memory figure from ``/proc/self/status`` in bytes (``VmHWM``: the resident peak, ``VmRSS``: now)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc), so a stage's resident peak counts what it holds, not
    what earlier stages freed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class StageProfiler:
    """Collects ``{stage: {"seconds": s, "peak_bytes": b, "base_bytes": b0, "memory": "cuda"|"rss"|...}}``:
    ``base_bytes`` is what was in use when the stage began, so ``peak_bytes - base_bytes`` is the stage's own."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    stages: dict[str, dict[str, float | int | str | None]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            kind = "cuda"
            base = int(torch.cuda.memory_allocated(self.device))
        else:
            _trim()
            kind = "rss" if _reset_hwm() else "rss-since-start"
            base = _read_status("VmRSS")
        t0 = time.perf_counter()
        done = False
        try:
            yield
            done = True
        finally:
            if done:  # one line per finished stage in a log (dragkit.core.progress); an error says its own
                say(f"{name}: {time.perf_counter() - t0:.1f} s")
            if cuda:
                torch.cuda.synchronize(self.device)
                peak: int | None = int(torch.cuda.max_memory_allocated(self.device))
            else:
                peak = _read_status("VmHWM")
                if peak is None:
                    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    peak = int(ru if sys.platform == "darwin" else ru * 1024)
            prev = self.stages.get(name)
            secs = time.perf_counter() - t0 + (float(prev["seconds"]) if prev else 0.0)  # type: ignore[arg-type]
            if prev and prev["peak_bytes"] is not None and peak is not None:
                peak = max(peak, int(prev["peak_bytes"]))  # type: ignore[arg-type]
                base = prev.get("base_bytes")  # type: ignore[assignment]
            self.stages[name] = {"seconds": round(secs, 4), "peak_bytes": peak, "base_bytes": base, "memory": kind}

    def timings(self) -> dict[str, float]:
        return {k: float(v["seconds"]) for k, v in self.stages.items()}  # type: ignore[arg-type]

    def table(self) -> str:
        return format_profile(self.stages)


def format_profile(stages: dict[str, dict]) -> str:
    """The profile as an aligned text table (what ``dragkit edit --profile`` prints)."""
    rows = [("stage", "seconds", "peak memory")]
    for k, v in stages.items():
        mem = "-" if v["peak_bytes"] is None else f"{int(v['peak_bytes']) / 2**20:,.0f} MiB ({v['memory']})"
        rows.append((k, f"{float(v['seconds']):.2f}", mem))
    total = sum(float(v["seconds"]) for v in stages.values())
    rows.append(("total", f"{total:.2f}", ""))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]}" for r in rows)
