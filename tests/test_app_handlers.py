"""The web app's handlers as plain functions: a session's clicks, mask and request; the runner's progress stream,
live previews, Stop, errors and the result bundle (the GAN engine with its real weights)."""

import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragkit.core.errors import InputError, ParameterError
from dragkit.interfaces.app import session as S
from dragkit.interfaces.app.runner import Runner

from .helpers import png_claiming


@pytest.fixture(scope="module")
def runner():
    return Runner()


def test_clicks_alternate_handle_and_target_and_undo_clear_work():
    s = S.set_image(Image.new("RGB", (64, 48), "gray"))
    s = S.add_click(S.add_click(S.add_click(s, 10, 20), 30, 20), 5, 5)
    assert s.handles == [(10.0, 20.0), (5.0, 5.0)] and s.targets == [(30.0, 20.0)]
    with pytest.raises(InputError, match="handle 2 has no target yet"):
        S.build_request(s)
    s = S.undo(s)
    req = S.build_request(s, prompt="a face", seed=3)
    assert req.handles == [(10.0, 20.0)] and req.targets == [(30.0, 20.0)] and req.seed == 3
    assert S.clear(s).points == () and S.clear(s).image is s.image
    with pytest.raises(InputError, match="outside the 64x48 image"):
        S.add_click(s, 70, 10)
    with pytest.raises(InputError, match="no points"):
        S.build_request(S.clear(s))
    with pytest.raises(InputError, match="upload or generate an image first"):
        S.add_click(S.Session(), 1, 1)
    with pytest.raises(InputError, match="up to 2048 pixels"):
        S.set_image(Image.new("RGB", (4000, 10)))
    assert S.set_image(Image.new("RGB", (8, 8))).points == ()  # a new image drops the old points


def test_the_annotated_image_shows_handles_targets_and_a_waiting_handle_enlarged_for_the_page():
    s = S.add_click(S.set_image(Image.new("RGB", (64, 64), "black")), 10, 10)
    a = np.asarray(S.annotate(s))
    assert a.shape == (512, 512, 3)  # a 64x64 face is shown 8x: every image pixel an 8x8 square

    def at(x, y):  # the centre of image pixel (x, y) on the enlarged picture
        return tuple(a[y * 8 + 4, x * 8 + 4])

    assert at(10, 10) == (230, 40, 40)  # the waiting handle, red
    s = S.add_click(s, 40, 40)
    a = np.asarray(S.annotate(s))
    assert at(10, 10) == (230, 40, 40) and at(40, 40) == (40, 90, 230)  # handle red, target blue
    mask = np.zeros((64, 64), bool)
    mask[:, 32:] = True
    a = np.asarray(S.annotate(S.with_mask(S.set_image(Image.new("RGB", (64, 64), "black")), mask)))
    assert at(5, 5)[0] > 100 and at(40, 5)[0] == 0  # outside the mask shown lighter
    # a click anywhere inside an enlarged pixel is that pixel; large images are shown as they are
    assert S.from_display(s, 10 * 8, 10 * 8 + 7) == (10.0, 10.0) and S.from_display(s, 511, 0) == (63.0, 0.0)
    big = S.set_image(Image.new("RGB", (600, 300)))
    assert S.display_scale(big.image.size) == 1 and S.annotate(big).size == (600, 300)
    assert S.from_display(big, 123, 45) == (123.0, 45.0)
    assert S.display_scale((200, 100)) == 2 and S.for_display(Image.new("RGB", (200, 100))).size == (400, 200)


def test_the_painted_layers_become_the_mask_and_advanced_settings_are_checked():
    layer = np.zeros((48, 64, 4), np.uint8)
    layer[10:20, 30:40] = (255, 255, 255, 255)
    m = S.mask_from_editor({"background": None, "layers": [layer], "composite": None}, (64, 48))
    assert m.shape == (48, 64) and m.sum() == 100 and m[15, 35]
    small = Image.fromarray(layer).resize((32, 24), Image.NEAREST)  # the editor may send a scaled layer
    assert S.mask_from_editor({"layers": [small]}, (64, 48)).sum() == 100
    assert S.mask_from_editor({"layers": [np.zeros((48, 64, 4), np.uint8)]}, (64, 48)) is None
    assert S.mask_from_editor(None, (64, 48)) is None
    assert S.parse_advanced("r_p = 6\n# comment\n\ndrag_steps=12  # fewer") == {"r_p": 6, "drag_steps": 12}
    with pytest.raises(ParameterError, match="no_such_param"):
        S.parse_advanced("no_such_param=1")


def test_the_runner_streams_progress_and_previews_then_the_result_and_a_bundle(runner, gan_pipe):
    face = gan_pipe.generate(5).image
    s = S.add_click(S.add_click(S.set_image(face), 32, 44), 32, 38)
    req = S.build_request(s)
    events = list(runner.run(req, "draggan", overrides={"drag_steps": 12, "invert_steps": 30}))
    progress, done = events[:-1], events[-1]
    assert done["kind"] == "done" and progress and all(e["kind"] == "progress" for e in progress)
    assert progress[-1]["total"] == 12 and any(e["preview"] is not None for e in progress)
    (res,) = done["results"]
    assert res.image.tobytes() != face.tobytes() and done["gif"][:6] == b"GIF89a"
    assert runner.pipeline("gan", None)[0] is runner.pipeline("gan", None)[0]  # loaded once, kept
    z = zipfile.ZipFile(io.BytesIO(S.bundle_bytes(done["results"])))
    assert {"result.png", "result.json", "points.json", "source.png"} <= set(z.namelist())
    assert json.loads(z.read("points.json"))["targets"] == [[32.0, 38.0]]
    assert json.loads(z.read("result.json"))["method"] == "draggan"


def test_stop_cancels_cleanly_and_mistakes_come_back_as_messages(runner, gan_pipe):
    face = gan_pipe.generate(6).image
    req = S.build_request(S.add_click(S.add_click(S.set_image(face), 20, 30), 40, 30))
    stop = threading.Event()
    events = []
    for ev in runner.run(req, "draggan", overrides={"drag_steps": 200, "invert_steps": 30}, cancel=stop):
        events.append(ev)
        if ev["kind"] == "progress" and ev["step"] >= 3:
            stop.set()
    (res,) = events[-1]["results"]
    assert res.info["stop_reason"] == "cancelled" and res.info["steps"] < 50
    (err,) = runner.run(req, "no-such-method")
    assert err["kind"] == "error" and "unknown method 'no-such-method'" in err["message"]
    (err,) = runner.run(req, "draggan", overrides={"r_p": -1})
    assert err["kind"] == "error" and "r_p" in err["message"]
    (err,) = runner.run(req, "draggan", num_results=2)
    assert err["kind"] == "error" and "several results come from methods that guide the sampling" in err["message"]
    (err,) = runner.run(req, "dragkit")  # offline (HF_HUB_OFFLINE=1): SD 1.5 is not here; the page's own way out
    assert err["kind"] == "error" and "the model field" in err["message"] and "faces64" in err["message"]
    assert "--model " not in err["message"]  # not the command line's flag


def test_a_time_limit_stops_the_drag_and_says_so(gan_pipe):
    limited = Runner(time_limit=0.5)
    limited._pipes[("gan", None)] = (gan_pipe, threading.Lock())  # the shared, already loaded GAN
    face = gan_pipe.generate(7).image
    req = S.build_request(S.add_click(S.add_click(S.set_image(face), 20, 30), 40, 30))
    done = list(limited.run(req, "draggan", overrides={"drag_steps": 5000, "invert_steps": 10}))[-1]
    (res,) = done["results"]
    assert res.info["stop_reason"] == "cancelled" and res.info["time_limit"] == 0.5
    assert res.info["steps"] < 5000
    # the limit also ends a long inversion (an uploaded image), not only the drag
    done = list(limited.run(req, "draggan", overrides={"drag_steps": 5000, "invert_steps": 100000}))[-1]
    (res,) = done["results"]
    assert res.info["inversion_stopped"].startswith("cancelled after") and res.info["steps"] == 0
    with pytest.raises(ValueError, match="time_limit"):
        Runner(time_limit=0)


def test_loaded_models_are_bounded(monkeypatch):
    import dragkit.pipelines as pipelines

    loads = []
    monkeypatch.setattr(pipelines, "load_pipeline", lambda engine, model, *a, **k: loads.append(model) or object())
    r = Runner(max_models=2)
    a = r.pipeline("diffusion", "a/a")[0]
    r.pipeline("diffusion", "b/b")
    assert r.pipeline("diffusion", "a/a")[0] is a  # kept: used most recently
    r.pipeline("diffusion", "c/c")  # b/b, the least recently used, goes
    r.pipeline("diffusion", "b/b")
    assert loads == ["a/a", "b/b", "c/c", "b/b"] and len(r._pipes) == 2


def test_the_page_can_name_hub_ids_packaged_models_and_model_folders_only(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "mine").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    monkeypatch.chdir(tmp_path)
    assert S.resolve_model("", [models]) is None and S.resolve_model("  ", []) is None
    assert S.resolve_model("faces64", []) == "faces64"
    assert S.resolve_model("stable-diffusion-v1-5/stable-diffusion-v1-5", []) == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert S.resolve_model("mine", [models]) == str((models / "mine").resolve())
    for bad in ["/etc", str(tmp_path / "secret"), "secret", "../secret", "mine/../../secret", "~", "~/x", "a/b/c"]:
        with pytest.raises(InputError, match="other paths are not read"):
            S.resolve_model(bad, [models])
    with pytest.raises(InputError, match="start the app with --model-dir"):
        S.resolve_model("/etc", [])
    (models / "link").symlink_to(tmp_path / "secret")  # a link out of the model folder is not under it:
    assert S.resolve_model("link", [models]) == "link"  # the name goes to the hub, the linked folder is not read


def test_uploads_are_checked_from_the_header_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    with pytest.raises(InputError, match="over the limit"):
        S.load_upload(tmp_path / "bomb.png")
    (tmp_path / "wide.png").write_bytes(png_claiming(3000, 10))  # small, but over the app's side limit
    with pytest.raises(InputError, match="up to 2048 pixels"):
        S.load_upload(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        S.load_upload(tmp_path / "junk.png")
    rgba = Image.new("RGBA", (10, 8), (0, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    s = S.load_upload(tmp_path / "a.png")
    assert s.image.mode == "RGB" and s.image.size == (10, 8) and s.image.getpixel((0, 0)) == (255, 255, 255)
    assert S.load_upload(None).image is None


@pytest.mark.slow
def test_a_long_session_grows_neither_the_server_state_nor_the_disk(gan_pipe, tmp_path):
    """Gradio keeps a new component object in a session's config for every property update a handler returns
    (``gr.skip()`` included) and never frees the old ones: the load test found a session growing by six
    components per edit. The handlers return values only; the session's config stays the same size. The files
    served (ours and Gradio's cached copies) are removed after ``keep_files`` seconds: by the app's clock, which
    the test moves on instead of waiting."""
    gradio_client = pytest.importorskip("gradio_client")
    from dragkit.interfaces.app.ui import build

    runner = Runner()
    runner._pipes[("gan", None)] = (gan_pipe, threading.Lock())
    files = tmp_path / "files"
    later = [0.0]  # seconds the test has moved the app's clock on
    demo = build(runner, 1, [], 8, keep_files=600, files_dir=files, clock=lambda: time.time() + later[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)

        def job(seed):
            client.predict(seed, api_name="/generate")
            client.predict(20, 30, api_name="/add_point")
            client.predict(26, 30, api_name="/add_point")
            advanced = "drag_steps=10\ninvert_steps=2\ninvert_restarts=1"
            out = client.predict("draggan", "", "", "", 42, advanced, False, "default", 1, api_name="/run")
            assert out[4].startswith("10 steps")  # the run's info line: it ran

        sizes = []
        for seed in range(4):
            job(seed)
            (session,) = demo.state_holder.session_data.values()
            sizes.append((len(session.blocks_config.blocks), len(session.config_values)))
        assert sizes[-1] == sizes[0], sizes
        served = {f for s in demo.temp_file_sets for f in s}
        assert served and all(Path(f).exists() for f in served)  # kept while younger than keep_files
        later[0] = 3600.0  # an hour on: what the first four jobs served is over keep_files old
        job(9)
        runs = [d for d in files.iterdir() if d.name != "shown"]
        cached = {f for s in demo.temp_file_sets for f in s}
        assert len(runs) == 1  # the last run's bundle; the older ones are gone
        assert not served & cached and not any(Path(f).exists() for f in served)  # Gradio's copies too
    finally:
        demo.close()


def test_forget_cached_removes_gradios_old_copies_only(tmp_path):
    """Gradio's cached copies older than the cutoff go (from disk and from its sets); younger ones and those a
    component keeps stay; a copy already gone is dropped from the set without an error."""
    import os
    from types import SimpleNamespace

    from dragkit.interfaces.app.ui import forget_cached

    old, young, kept, gone = (tmp_path / f"{n}.png" for n in ("old", "young", "kept", "gone"))
    for f in (old, young, kept):
        f.write_bytes(b"x")
    now = os.lstat(young).st_ctime
    files = {str(old), str(young), str(kept), str(gone)}
    components = {1: SimpleNamespace(keep_in_cache={str(kept)}), 2: object()}
    blocks = SimpleNamespace(blocks=components, temp_file_sets=[files])
    forget_cached(blocks, now - 1)  # nothing is over a second old
    assert files == {str(old), str(young), str(kept)} and old.exists()
    forget_cached(blocks, now + 1)
    assert files == {str(kept)} and not old.exists() and not young.exists() and kept.exists()
