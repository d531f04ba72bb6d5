"""Injected faults: `dragkit edit` killed at random moments, `dragkit bench` killed again and again until it is
done, a folder that cannot be written and a disk that fills up. Every file on disk is whole or absent, a resumed
bench equals an uninterrupted one, and every fault is one clear line, never a traceback."""

import fcntl
import json
import os
import pty
import random
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
from PIL import Image

from dragkit.interfaces.cli import main

from .helpers import ENV, TINY_SD_ARGS, App, dragkit, make_drag100, start_dragkit

FAST = [
    "--method",
    "draggan",
    "--set",
    "drag_steps=40",
    "--set",
    "invert_steps=30",
    "--set",
    "invert_restarts=2",
    "-q",
]


def _popen(args, env_extra=None):
    cmd = [sys.executable, "-m", "dragkit", *map(str, args)]
    return subprocess.Popen(
        cmd, env={**ENV, **(env_extra or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _whole_or_absent(out):
    """``out`` and its JSON are both absent, or both whole (the PNG decodes, the JSON parses and matches)."""
    js = out.with_suffix(".json")
    if not out.exists():
        assert not js.exists() or json.loads(js.read_text())["method"] == "draggan"  # the JSON goes first
        return False
    rec = json.loads(js.read_text())
    with Image.open(out) as im:
        im.load()
        assert json.loads(im.text["dragkit"])["points"]["handles"] == rec["points"]["handles"]
    return True


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_edit_killed_at_random_moments_leaves_each_file_whole_or_absent(face_png, tmp_path):
    out = tmp_path / "out.png"
    args = ["edit", face_png, "--drag", "31,50:31,45", "-o", out, *FAST]
    t0 = time.monotonic()
    r = dragkit(*args)
    whole = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    reference = out.read_bytes()
    rng = random.Random(12)
    kills = 0
    for _ in range(5):
        out.unlink(missing_ok=True)
        out.with_suffix(".json").unlink(missing_ok=True)
        proc = _popen(args)
        time.sleep(rng.uniform(0.2, whole))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if _whole_or_absent(out):
            assert out.read_bytes() == reference
        visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
        assert visible in ([], ["out.json"], ["out.json", "out.png"])
        assert all(p.name.endswith(".part") for p in tmp_path.iterdir() if p.name.startswith("."))
    assert kills >= 3
    r = dragkit(*args)  # a rerun writes the output and sweeps what the killed runs left
    assert r.returncode == 0 and out.read_bytes() == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.png"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_stops_an_edit_with_one_line_and_nothing_partial(face_png, tmp_path):
    """SIGTERM while the drag runs: the readiness signal is the drag's own progress bar, which the CLI draws on a
    terminal (stderr here is a pseudo-terminal). ``stop_distance=0``: the drag never arrives, it is stopped."""
    out = tmp_path / "out.png"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # tqdm draws nothing on 0 columns
    args = [
        "edit",
        face_png,
        "--method",
        "draggan",
        "--drag",
        "31,50:31,45",
        "-o",
        out,
        "--set",
        "drag_steps=5000",
        "--set",
        "stop_distance=0",
    ]
    proc = start_dragkit(*args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = read_until(master, b"drag:", timeout=120)  # tqdm's "drag: ..." bar: the edit is dragging now
    assert b"drag:" in seen, seen[-500:]
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    err = (seen + read_until(master, None, timeout=30)).decode(errors="replace")
    os.close(master)
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert rc == 143 and last.strip() == "dragkit: terminated; no partial output written", err[-500:]
    assert list(tmp_path.iterdir()) == []


def read_until(fd: int, marker: bytes | None, timeout: float) -> bytes:
    """Bytes from ``fd`` until ``marker`` is among them (``None``: until the writer closes), at most ``timeout``
    seconds."""
    data, deadline = b"", time.monotonic() + timeout
    while (marker is None or marker not in data) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed its end of the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_stops_the_app_promptly_with_an_edit_running(tmp_path):
    """A service manager stops the app with SIGTERM while a long edit runs: the process exits with 143 within
    seconds, not after the edit (or never). The app says when it serves; the edit's first streamed update says
    it runs."""
    gradio_client = pytest.importorskip("gradio_client")
    app = App(tmp_path / "app.log")
    try:
        client = gradio_client.Client(app.url, verbose=False)
        client.predict(3, api_name="/generate")
        client.predict(20, 30, api_name="/add_point")
        client.predict(26, 30, api_name="/add_point")
        job = client.submit("draggan", "", "", "", 42, "drag_steps=10000", False, "default", 1, api_name="/run")
        updates = iter(job)
        next(updates)  # the first streamed update ("running: step k of n"): the drag is under way
        t = time.monotonic()
        rc = app.stop(signal.SIGTERM, timeout=60)
        assert rc == 143 and time.monotonic() - t < 20
    finally:
        app.stop()
    assert "dragkit: terminated" in (tmp_path / "app.log").read_text()


def _kill_writes(monkeypatch, error):
    import dragkit.utils.io

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(dragkit.utils.io.os, "fsync", fail)


@pytest.mark.slow
@pytest.mark.parametrize(
    "error, reason",
    [
        (OSError(28, "No space left on device"), "No space left on device"),
        (PermissionError(13, "Permission denied"), "Permission denied"),
    ],
)
def test_a_full_disk_or_a_refused_write_is_one_clear_line_and_leaves_nothing(
    face_png, tmp_path, monkeypatch, capsys, error, reason
):
    _kill_writes(monkeypatch, error)
    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as ex:
        main(["edit", str(face_png), "--drag", "31,50:31,45", "-o", str(out), *FAST])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"dragkit: error: cannot write {out.with_suffix('.json')}: {reason}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.subprocess
def test_a_read_only_folder_is_refused_before_any_work(face_png, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = dragkit("edit", face_png, "--drag", "31,50:31,45", "-o", ro / "out.png", *FAST)
    assert r.returncode == 2 and r.stderr.strip() == f"dragkit: error: output folder {ro} is not writable"


def test_a_bench_that_cannot_write_stops_with_one_line(tmp_path, monkeypatch, capsys):
    data = make_drag100(tmp_path / "d", n=2)
    _kill_writes(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(SystemExit) as ex:
        main(["bench", str(data), "--method", "identity", "-o", str(tmp_path / "run"), "-q"])
    assert ex.value.code == 2
    assert "No space left on device" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not list((tmp_path / "run").rglob("*.part"))


def _results(run):
    """Each sample's result record without what differs between two runs of the same edit (timings, memory)."""
    out = {}
    for p in sorted(run.glob("samples/*/*/result.json")):
        rec = json.loads(p.read_text())
        for k in ("bench", "timings", "versions", "profile"):
            rec.pop(k, None)
        rec.get("info", {}).pop("profile", None)
        out[p.parent.relative_to(run).as_posix()] = (rec, (p.parent / "result.png").read_bytes())
    return out


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_bench_killed_again_and_again_until_done_equals_an_uninterrupted_one(tiny_sd, tmp_path):
    n = 6
    data = make_drag100(tmp_path / "d", n=n)
    env = {"DRAGKIT_CACHE": str(tmp_path / "cache")}
    base = ["--method", "dragdiffusion", "--model", tiny_sd, "-q", *TINY_SD_ARGS]
    straight = tmp_path / "straight"
    r = dragkit("bench", data, "-o", straight, *base, env_extra=env)
    assert r.returncode == 0, r.stderr

    run, kills, last = tmp_path / "run", 0, 0
    while True:
        proc = _popen(["bench", data, "-o", run, *base], env)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:  # kill as soon as one more sample is written
            if len(list(run.glob("samples/*/*/result.json"))) > last:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.02)
        proc.wait()
        done = len(list(run.glob("samples/*/*/result.json")))
        assert done >= last
        last = done
        if proc.returncode == 0:
            break
        assert kills <= 2 * n, "no progress between kills"
    assert kills >= n - 1  # killed after (nearly) every sample
    assert not list(run.rglob("*.part"))

    a, b = _results(straight), _results(run)
    assert sorted(a) == sorted(b) and len(a) == n  # every sample exactly once
    for k in a:
        assert a[k][0] == b[k][0], k  # the same edit: points, trajectory, losses
        assert np.array_equal(
            np.asarray(Image.open(run / k / "result.png")), np.asarray(Image.open(straight / k / "result.png"))
        )
    for folder in (straight, run):
        r = dragkit("eval", folder, "--md", "alex", "-q")
        assert r.returncode == 0, r.stderr
    ma, mb = (json.loads((f / "metrics.json").read_text()) for f in (straight, run))
    for m in (ma, mb):
        for agg in (m["overall"], *m["categories"].values()):
            for k in [k for k in agg if k.startswith("seconds") or "memory" in k]:
                agg.pop(k)
    assert ma["overall"] == mb["overall"] and ma["categories"] == mb["categories"]
