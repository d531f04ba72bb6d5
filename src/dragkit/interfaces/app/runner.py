"""Runs edits for the app: loaded pipelines are kept between runs (shared by every session, one edit per
pipeline at a time), each edit runs in a worker thread, and its progress comes back as a stream of plain dicts
that the page turns into a progress bar and a live preview. A ``threading.Event`` stops an edit cleanly: the loop
polls it each step and the result is the edit so far."""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ...core.errors import DragkitError, ModelError, ParameterError
from ...core.types import DragRequest, DragResult
from ...methods import get_method
from ...utils.viz import draw_points, gif_bytes
from .session import display_scale

PREVIEW_EVERY = 5  # a preview image every this many drag steps (diffusion: one UNet call and a TAESD decode each)


class Runner:
    """``max_models``: how many loaded pipelines are kept (the least recently used goes first; an edit that is
    running keeps its own). ``time_limit``: seconds after which an edit's LoRA training, GAN inversion and drag
    stop where they are (the result is the edit so far, and says so); ``None``: no limit."""

    def __init__(
        self, device: str = "cpu", dtype: Any = None, max_models: int = 3, time_limit: float | None = None
    ) -> None:
        if max_models < 1:
            raise ValueError(f"max_models={max_models}: keep at least 1")
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit={time_limit}: expected seconds > 0, or None for no limit")
        self.device, self.dtype, self.max_models, self.time_limit = device, dtype, max_models, time_limit
        self._pipes: OrderedDict[tuple[str, str | None], tuple[Any, threading.Lock]] = OrderedDict()
        self._guard = threading.Lock()

    def pipeline(self, engine: str, model: str | None) -> tuple[Any, threading.Lock]:
        """The loaded pipeline for ``(engine, model)`` (loaded on first use, then kept) and its lock."""
        from ...pipelines import load_pipeline

        key = (engine, model or None)
        with self._guard:
            if key not in self._pipes:
                self._pipes[key] = (
                    load_pipeline(engine, model or None, self.device, self.dtype, quiet=True),
                    threading.Lock(),
                )
                while len(self._pipes) > self.max_models:
                    self._pipes.popitem(last=False)
            self._pipes.move_to_end(key)
            return self._pipes[key]

    def run(
        self,
        request: DragRequest,
        method: str,
        model: str | None = None,
        overrides: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
        num_results: int | None = None,
        code: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """Yields ``{"kind": "progress", "step", "total", "preview"}`` while the edit runs, then
        ``{"kind": "done", "results": [DragResult, ...], "gif": bytes | None}``; a mistake or a failure ends with
        ``{"kind": "error", "message"}`` (the app keeps working)."""
        overrides = dict(overrides or {})
        try:
            m = get_method(method)
            params = m.resolve(overrides)
            if num_results not in (None, 1) and params.get("sampler") != "guidance":
                raise ParameterError(
                    f"several results come from methods that guide the sampling (luciddrag), not {method}"
                )
            pipe, lock = self.pipeline(m.engine, model)
        except ModelError as e:
            way_out = (
                " (a folder from the app's --model-dir: its name in the model field); or, with no download: "
                "faces64 in the model field for a 64-px face, or the method draggan for the face GAN"
                if e.offline
                else ""
            )
            yield {"kind": "error", "message": f"{e}{way_out}"}
            return
        except (DragkitError, OSError, ValueError) as e:
            yield {"kind": "error", "message": str(e)}
            return
        total = int(params.get("drag_steps", 0)) or None
        events: queue.Queue = queue.Queue()
        stop = cancel or threading.Event()
        timed_out = threading.Event()

        def time_up() -> None:
            timed_out.set()
            stop.set()

        timer = threading.Timer(self.time_limit, time_up) if self.time_limit else None

        k = display_scale(request.image.size)

        def callback(ev: dict[str, Any]) -> None:  # previews are enlarged for the page like the clicked picture
            preview = ev.get("preview")
            if preview is None and ev.get("handles_xy") is not None and ev["step"] % PREVIEW_EVERY == 0:
                preview = draw_points(request.image, ev["handles_xy"], request.targets, scale=k)  # the handles now
            elif preview is not None:
                preview = draw_points(preview, ev["handles_xy"], request.targets, scale=k)
            events.put({"kind": "progress", "step": int(ev["step"]) + 1, "total": total, "preview": preview})

        def work() -> None:
            kwargs: dict[str, Any] = {"method": method, "callback": callback, "cancel": stop.is_set, "progress": False}
            if m.engine in ("gan", "diffusion"):  # diffusion: the drivers that optimize the latent preview it
                kwargs["record_frames"] = PREVIEW_EVERY
            if m.engine == "gan" and code is not None:  # a generated image: its own code, no fit
                kwargs["code"] = code
            if num_results is not None and params.get("sampler") == "guidance":
                from ...methods.drivers import GuidanceOptions

                kwargs["options"] = GuidanceOptions(num_results=num_results)
            try:
                with lock:
                    if timer is not None:  # the limit counts from the start of the edit, not the wait for the lock
                        timer.start()
                    out = pipe(request, **kwargs, **overrides)
                results: list[DragResult] = out if isinstance(out, list) else [out]
                if timed_out.is_set():
                    for r in results:
                        r.info["time_limit"] = self.time_limit
                frames = [f for _, f in results[0].frames]
                gif = (
                    gif_bytes([draw_points(f, results[0].handles, request.targets, scale=k) for f in frames])
                    if frames
                    else None
                )
                events.put({"kind": "done", "results": results, "gif": gif})
            except DragkitError as e:
                events.put({"kind": "error", "message": str(e)})
            except Exception as e:  # reported in the page; the app keeps serving
                events.put({"kind": "error", "message": f"the edit failed: {type(e).__name__}: {e}"})
            finally:
                if timer is not None:
                    timer.cancel()

        thread = threading.Thread(target=work, name="dragkit-edit", daemon=True)
        thread.start()
        while True:  # when the page falls behind, only the newest progress (and preview) is shown
            batch = [events.get()]
            while not events.empty():
                batch.append(events.get_nowait())
            progress = [e for e in batch if e["kind"] == "progress"]
            if progress:
                preview = next((e["preview"] for e in reversed(progress) if e["preview"] is not None), None)
                yield {**progress[-1], "preview": preview}
            final = [e for e in batch if e["kind"] != "progress"]
            if final:
                thread.join()
                yield final[0]
                return
