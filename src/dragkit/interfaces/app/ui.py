"""The Gradio page of ``dragkit app``: every event handler is a thin wrapper over :mod:`.session` and
:mod:`.runner`; per-user state lives in ``gr.State`` (one :class:`~dragkit.interfaces.app.session.Session` per browser
session), loaded models in one shared :class:`~dragkit.interfaces.app.runner.Runner`."""

import atexit
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...core.errors import DragkitError, InputError
from ...core.limits import KEEP_SERVED_FILES as KEEP_FILES
from ...methods import METHODS
from ...utils.io import write_bytes_atomic
from . import session as S
from .runner import Runner

MAX_UPLOAD = "20mb"


def prune(folder: Path, cutoff: float, keep: Path | None = None) -> None:
    """Remove the entries of ``folder`` but ``keep`` (files, or run folders with their files) last changed before
    the time ``cutoff``; one that vanishes meanwhile is fine."""
    for entry in folder.iterdir():
        if entry == keep:
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except FileNotFoundError:
            pass


def forget_cached(blocks: Any, cutoff: float) -> None:
    """Remove Gradio's cached copies of the files ``blocks`` served that were made before the time ``cutoff``
    (but those Gradio marks to keep). Gradio's own scheduled deleter (``delete_cache``) walks these sets while
    request threads add to them; the first "Set changed size during iteration" ends its task for good and the
    copies then pile up. This walks a copy of each set (``set.copy`` is one step under the GIL)."""
    keep = set().union(*(getattr(c, "keep_in_cache", set()) for c in blocks.blocks.values()))
    for files in blocks.temp_file_sets:
        for f in files.copy():
            if f in keep:
                continue
            try:
                if os.lstat(f).st_ctime >= cutoff:
                    continue
                os.remove(f)
            except FileNotFoundError:
                pass
            files.discard(f)


class StopFlag(threading.Event):
    """A session's Stop button. Gradio deep-copies a state's default value for a session that has none yet (an
    API client's); an event's lock cannot be copied, so a copy is a fresh flag."""

    def __deepcopy__(self, memo: dict) -> "StopFlag":
        return StopFlag()


def build(
    runner: Runner | None = None,
    concurrency: int = 1,
    model_dirs: Sequence[str | os.PathLike] = (),
    queue_size: int | None = 64,
    keep_files: int = KEEP_FILES,
    files_dir: str | os.PathLike | None = None,
    clock: Callable[[], float] = time.time,
) -> Any:
    """The app's ``gr.Blocks`` (queued: ``concurrency`` edits at once, at most ``queue_size`` waiting; more are
    refused with "queue is full"). The pictures and bundles it serves are written under ``files_dir`` (default: a
    temporary folder removed at exit) and, like Gradio's cached copies of them, removed ``keep_files`` seconds
    later, so a long-running app does not fill its disk. A model typed in the page must be a hub id, a packaged
    model or a name under one of ``model_dirs`` (:func:`~dragkit.interfaces.app.session.resolve_model`). The
    files are pruned when a picture is loaded or generated and when a run ends, by ``clock`` (seconds; tests pass
    a clock they move on instead of waiting)."""
    import gradio as gr

    runner = runner or Runner()
    if keep_files < 1:
        raise ValueError(f"keep_files={keep_files}: keep the served files at least 1 second")
    if files_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="dragkit-app-"))
        atexit.register(shutil.rmtree, out_dir, ignore_errors=True)  # the pictures and bundles go with the process
    else:
        out_dir = Path(files_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    pruned = [clock()]

    shown_dir = out_dir / "shown"
    shown_dir.mkdir(exist_ok=True)

    def prune_old() -> None:  # at most every tenth of the keeping time
        now = clock()
        if now - pruned[0] > keep_files / 10:
            pruned[0] = now
            prune(shown_dir, now - keep_files)
            prune(out_dir, now - keep_files, keep=shown_dir)
            forget_cached(demo, now - keep_files)

    def failed(e: Exception | str) -> str:  # said once, in the status line beside the canvas, until the next action
        return f"**error:** {e}"

    def shown(image):
        """A picture for the page as a PNG file named by its content, written once and atomically. (Gradio
        rewrites its cached copy of an image *value* in place each time it is sent, so two sessions showing the
        same picture could truncate the file under a browser that is reading it; copies of files are atomic.)"""
        if image is None:
            return None
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        path = shown_dir / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        if not path.exists():
            write_bytes_atomic(path, data)
        return str(path)

    # Every handler writes the status line beside the canvas: what to do next, how a run went, or an error (shown
    # there once, not as a badge on every output, and replaced by the next action's line).
    def on_upload(path, s, editor):
        prune_old()
        try:
            new = S.load_upload(path)
        except DragkitError as e:  # the refused upload leaves the image, the points and the mask as they were
            return s, shown(S.annotate(s)), editor, failed(e)
        return new, shown(S.annotate(new)), shown(new.image), "click a handle, then its target"

    def on_generate(seed, generator, s):
        prune_old()
        try:
            chosen = S.resolve_generator(generator, model_dirs)
            pipe, lock = runner.pipeline("gan", chosen)
            with lock:  # the same generator may be running another session's edit
                sample = pipe.generate(int(seed))
        except DragkitError as e:  # the image, points and mask stay as they were (a rare path: one update is fine)
            return s, shown(S.annotate(s)), gr.skip(), failed(e)
        s = dataclasses.replace(S.set_image(sample.image), generated=(chosen, sample.code))
        name = "the DCGAN" if chosen is None else Path(chosen).name
        hint = f"image {int(seed)} from {name}: click a handle, then its target"
        return s, shown(S.annotate(s)), shown(sample.image), hint

    def pairs_hint(s, verb: str = "click") -> str:
        n = len(s.points)
        if not n:
            return "click a handle, then its target" if s.image is not None else "upload an image or generate a face"
        if n % 2:
            return f"handle {n // 2 + 1}: now {verb} its target"
        return f"{n // 2} pair(s); {verb} another handle or Run"

    def on_click(s, evt: gr.SelectData):
        try:
            s = S.add_click(s, *S.from_display(s, *evt.index))
        except DragkitError as e:
            return s, shown(S.annotate(s)), failed(e)
        return s, shown(S.annotate(s)), pairs_hint(s)

    def on_point(s, x, y):
        """A point typed as numbers (image pixels), the same as a click there: precise placement, and the way
        scripts (``gradio_client``) set points."""
        try:
            if x is None or y is None:
                raise InputError("type both x and y (image pixels) for the point")
            s = S.add_click(s, float(x), float(y))
        except DragkitError as e:
            return s, shown(S.annotate(s)), failed(e)
        return s, shown(S.annotate(s)), pairs_hint(s, "add")

    def on_undo(s):
        s = S.undo(s)
        return s, shown(S.annotate(s)), pairs_hint(s)

    def on_clear(s):
        s = S.clear(s)
        return s, shown(S.annotate(s)), pairs_hint(s)

    # The handlers return values, never property updates (gr.skip(), gr.update()): Gradio 6 keeps a new component
    # object in the session's config for every update and never frees the old ones (tests/test_app_handlers.py
    # counts them), so a long-lived session would grow without bound.
    def on_mask(s, editor):
        if s.image is None:
            return s, None
        mask = S.mask_from_editor(editor, s.image.size)
        if mask is not None or s.mask is not None:  # a new background with nothing painted changes nothing
            s = S.with_mask(s, mask)
        return s, shown(S.annotate(s))

    def on_run(
        s,
        stop,
        method,
        model,
        prompt,
        edit_prompt,
        seed,
        advanced,
        auto_mask,
        lora,
        n_results,
        progress=gr.Progress(),  # noqa: B008 - gradio injects it
    ):
        stop.clear()
        try:
            overrides = S.parse_advanced(advanced)
            if auto_mask:
                overrides["mask"] = "auto"
            if lora and lora != "default" and METHODS[method].engine == "diffusion":
                overrides["lora"] = lora
            req = S.build_request(s, prompt, edit_prompt, int(seed))
            chosen = S.resolve_model(model, model_dirs)
        except DragkitError as e:
            yield None, None, None, None, failed(e)
            return
        code = None  # a generated image, edited by a GAN method on its own generator (the model field left empty)
        if METHODS[method].engine == "gan" and s.generated is not None and chosen in (None, s.generated[0]):
            chosen, code = s.generated
        n = int(n_results) if n_results and int(n_results) > 1 else None
        preview = None  # while it runs: the newest preview, and the last run's outputs cleared
        for ev in runner.run(req, method, chosen, overrides, stop, n, code):
            if ev["kind"] == "progress":
                if ev["total"]:
                    progress((min(ev["step"], ev["total"]), ev["total"]), desc="dragging")
                preview = shown(ev["preview"]) if ev["preview"] is not None else preview
                step = f"step {min(ev['step'], ev['total'])} of {ev['total']}" if ev["total"] else f"step {ev['step']}"
                yield preview, None, None, None, f"running: {step}"
            elif ev["kind"] == "error":
                yield None, None, None, None, failed(ev["message"])
                return
            else:
                results = ev["results"]
                prune_old()
                stem = Path(tempfile.mkdtemp(dir=out_dir)) / "dragkit-result"  # one folder per run: no clashes
                bundle = stem.with_suffix(".zip")
                bundle.write_bytes(S.bundle_bytes(results))
                gif = None
                if ev["gif"]:
                    gif = stem.with_suffix(".gif")
                    gif.write_bytes(ev["gif"])
                r = results[0]
                info = (
                    f"{r.info.get('steps', 0)} steps ({r.info.get('stop_reason')}), {r.timings.get('total', 0):.1f} s"
                )
                if r.info.get("time_limit"):
                    info += f"; stopped at the app's time limit of {r.info['time_limit']:g} s (the edit so far)"
                for stage in ("lora", "inversion"):  # a stop during the LoRA's training or a GAN inversion
                    if f"{stage}_stopped" in r.info:
                        info += f"; {stage} {r.info[f'{stage}_stopped']}"
                for warning in r.info.get("warnings", []):  # e.g. a photo the face GAN reproduces poorly
                    info += f"\n\n**note:** {warning}"
                gallery = (
                    [(shown(x.image), x.info.get("intention", {}).get("target_prompt", "")) for x in results]
                    if len(results) > 1
                    else None
                )
                yield shown(S.for_display(r.image)), str(gif) if gif else None, str(bundle), gallery, info

    def on_stop(stop):
        stop.set()
        return "stopping: the result is the edit so far"

    methods = sorted(METHODS)
    diffusion = [m for m in methods if METHODS[m].engine == "diffusion"]
    guided = [m for m in methods if METHODS[m].defaults.get("sampler") == "guidance"]  # several results
    only_for = {  # panels that apply to some methods only; the rest are hidden in the page (no server update)
        "prompt": diffusion,
        "lora": diffusion,
        "edit-prompt": [m for m in methods if METHODS[m].defaults.get("clip_weight", 0)],
        "gallery": guided,
        "n-results": guided,
    }
    show_panels = (
        "(m) => { const only = " + json.dumps(only_for) + "; for (const [id, names] of Object.entries(only)) {"
        " const el = document.getElementById(id); if (el) el.style.display = names.includes(m) ? '' : 'none'; } }"
    )

    # Gradio's cached copies are pruned by forget_cached, not by its delete_cache (see there); the rest go at exit
    with gr.Blocks(title="dragkit") as demo:
        state = gr.State(S.Session())
        stop = gr.State(StopFlag)
        gr.Markdown("# dragkit\nUpload an image or generate a face, click a **handle** then its **target**, Run.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):  # the first screen: image, method, Run and status together
                upload = gr.UploadButton(  # a file path: dragkit reads it, after checking its size from the header
                    "upload an image", file_types=["image"], type="filepath", elem_id="upload"
                )
                with gr.Row():
                    face_seed = gr.Number(value=0, precision=0, label="GAN seed", minimum=0, min_width=80)
                    generator = gr.Dropdown(  # the bundled DCGAN, or a StyleGAN .pkl from the app's model folders
                        S.generator_choices(model_dirs),
                        value=S.GAN_DEFAULT,
                        label="generator",
                        allow_custom_value=True,
                        min_width=120,
                        elem_id="generator",
                    )
                    generate = gr.Button("generate (GAN)", min_width=100)
                method = gr.Dropdown(methods, value="draggan", label="method", elem_id="method")
                model = gr.Textbox(
                    label="model: hub id, faces64, or a name in the app's model folders (empty: default)"
                )
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run", min_width=80)
                    stop_btn = gr.Button("Stop", elem_id="stop", min_width=80)
                hint = gr.Markdown("upload an image or generate a face", elem_id="hint")
                with gr.Row():
                    undo = gr.Button("undo last point", min_width=80)
                    clear = gr.Button("clear points", min_width=80)
            with gr.Column(scale=2):
                canvas = gr.Image(
                    label="points: click handle, then target",
                    type="pil",
                    interactive=False,
                    elem_id="canvas",
                )
            with gr.Column(scale=2):
                result = gr.Image(
                    label="result (live preview while it runs)", type="pil", interactive=False, elem_id="result"
                )
                bundle = gr.File(label="result bundle (PNG + JSON + mask + points)", elem_id="bundle", height=90)
                gif = gr.Image(label="trajectory", type="filepath", interactive=False, height=200)
        with gr.Row(visible=False):  # for scripts (gradio_client's /add_point); the page clicks
            px = gr.Number(label="x", precision=2, elem_id="px")
            py = gr.Number(label="y", precision=2, elem_id="py")
            add_point = gr.Button("add point", elem_id="add_point")
        with gr.Row():  # each shown only for the methods it applies to
            prompt = gr.Textbox(label="prompt (diffusion)", elem_id="prompt")
            edit_prompt = gr.Textbox(label="edit prompt (CLIPDrag)", elem_id="edit-prompt")
            lora = gr.Radio(
                ["default", "train", "none"], value="default", label="identity LoRA (diffusion)", elem_id="lora"
            )
            n_results = gr.Number(
                value=1, precision=0, minimum=1, maximum=8, label="results (LucidDrag)", elem_id="n-results"
            )
        gallery = gr.Gallery(label="several results (LucidDrag)", columns=3, elem_id="gallery")
        with gr.Accordion("editable region (optional): paint where the image may change", open=False):
            editor = gr.ImageEditor(type="numpy", label="paint the mask", brush=gr.Brush(colors=["#ffffff"]))
            auto_mask = gr.Checkbox(label="automatic mask (AdaptiveDrag's superpixels)", value=False)
        with gr.Accordion("Advanced", open=False):
            seed = gr.Number(value=42, precision=0, label="seed", minimum=0)
            advanced = gr.Textbox(
                lines=4, label="parameters, one NAME=VALUE per line (see dragkit edit --help-params)"
            )

        upload.upload(on_upload, [upload, state, editor], [state, canvas, editor, hint])
        generate.click(on_generate, [face_seed, generator, state], [state, canvas, editor, hint], api_name="generate")
        add_point.click(on_point, [state, px, py], [state, canvas, hint], api_name="add_point")
        canvas.select(on_click, [state], [state, canvas, hint])
        undo.click(on_undo, [state], [state, canvas, hint])
        clear.click(on_clear, [state], [state, canvas, hint])
        editor.change(on_mask, [state, editor], [state, canvas])
        run.click(
            on_run,
            [state, stop, method, model, prompt, edit_prompt, seed, advanced, auto_mask, lora, n_results],
            [result, gif, bundle, gallery, hint],
            concurrency_id="edit",
            api_name="run",
        )
        stop_btn.click(on_stop, [stop], [hint], queue=False)
        method.change(None, [method], None, js=show_panels)
        demo.load(None, [method], None, js=show_panels)
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    atexit.register(forget_cached, demo, math.inf)  # Gradio's copies go with the process, like ours
    return demo


def launch(
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    concurrency: int = 1,
    device: str = "cpu",
    model_dirs: Sequence[str | os.PathLike] = (),
    time_limit: float | None = None,
    queue_size: int | None = 64,
    keep_files: int = KEEP_FILES,
) -> None:
    """Serve the app (blocks). It binds ``host`` (this machine only by default); uploads over ``MAX_UPLOAD``
    are refused by the server. ``port=0`` takes a free port. Once the server answers, one line on stdout says where:
    ``dragkit app: serving on URL`` (what scripts and tests wait for)."""
    demo = build(Runner(device, time_limit=time_limit), concurrency, model_dirs, queue_size, keep_files)
    if port == 0:
        import socket

        with socket.socket() as s:  # the operating system's choice of a free port, handed to the server
            s.bind((host, 0))
            port = s.getsockname()[1]
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_UPLOAD,
        show_error=True,
        prevent_thread_lock=True,
    )
    print(f"dragkit app: serving on {demo.local_url}", flush=True)
    demo.block_thread()
