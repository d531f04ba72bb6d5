"""The web app under load: N concurrent sessions driven through ``gradio_client`` against ``dragkit app`` on
127.0.0.1 (the GAN engine, real DCGAN weights), each running jobs one after another: generate a face, type a
handle and a target, run a short DragGAN edit, download the bundle.

Checked for every job: it completes, or the queue refuses it cleanly ("queue is full"); its bundle holds exactly
the points this session typed (no session sees another's points or results); its result differs from the face.
Measured: throughput, queue latency (submitted → started) p50/p95, job time p50/p95, and the app process's
resident memory over the run: the mean over the first and the last tenth of the jobs, the peak, the resident
memory after every tenth of the jobs, and its growth per 100 jobs over the second half of the run (a least-squares
slope: warm-up is over by then, so a leak shows as a slope well above zero).

``--tracemalloc`` runs the app with Python's allocation tracing: every ``--trace-every`` seconds the Python heap's
size is recorded, and the lines whose allocations grew most since the first record after ``--trace-warm`` seconds
are reported. Memory that torch allocates for tensors is not traced; it shows in the resident memory only.

    python scripts/app_load.py --sessions 20 --jobs 60 --queue-size 64 -o docs/reliability/app_load.json

Exit status 1 when any job failed in another way or saw another session's points.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# Runs ``python -m dragkit ...`` with tracemalloc on, writing one JSON line per ``DK_TRACE_EVERY`` seconds.
TRACED_APP = r"""
import json, os, runpy, sys, threading, time, tracemalloc

tracemalloc.start(1)
out, every, warm = os.environ["DK_TRACE_OUT"], float(os.environ["DK_TRACE_EVERY"]), float(os.environ["DK_TRACE_WARM"])
t0 = time.time()

def record():
    base = None
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        rec = {"t": time.time(), "python_heap_bytes": tracemalloc.get_traced_memory()[0]}
        if base is None and time.time() - t0 >= warm:
            base, rec["baseline"] = snap, True
        elif base is not None:
            top = snap.compare_to(base, "lineno")[:8]
            rec["growth_since_warm"] = [[str(d.traceback), d.size_diff, d.count_diff] for d in top]
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")

threading.Thread(target=record, daemon=True).start()
sys.argv = ["dragkit", *sys.argv[1:]]
runpy.run_module("dragkit", run_name="__main__")
"""


def slope_per_100(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(job count, MiB)`` points, in MiB per 100 jobs."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def session(url: str, k: int, jobs: int, steps: int, out: list[dict], stop: threading.Event) -> None:
    from gradio_client import Client

    rng = np.random.default_rng(k)
    client = Client(url, verbose=False)
    for j in range(jobs):
        if stop.is_set():
            return
        seed = int(rng.integers(0, 1000))
        hx, hy = (int(v) for v in rng.integers(16, 48, 2))
        tx, ty = hx + int(rng.integers(-6, 7)), hy + int(rng.integers(-6, 7))
        rec: dict = {"session": k, "job": j, "seed": seed, "points": [[hx, hy], [tx, ty]]}
        try:
            client.predict(seed, api_name="/generate")
            client.predict(hx, hy, api_name="/add_point")
            client.predict(tx, ty, api_name="/add_point")
            advanced = f"drag_steps={steps}\ninvert_steps=20\ninvert_restarts=1"
            t_submit = time.perf_counter()
            job = client.submit("draggan", "", "", "", 42, advanced, False, "default", 1, api_name="/run")
            started = None
            while not job.done():
                st = job.status()
                if started is None and st.code.name in ("PROCESSING", "ITERATING", "PROGRESS"):
                    started = time.perf_counter()
                time.sleep(0.02)
            result = job.result()
            t_end = time.perf_counter()
            started = started or t_end
            bundle = zipfile.ZipFile(result[2])
            pts = json.loads(bundle.read("points.json"))
            rec.update(
                status="done",
                queue_s=started - t_submit,
                job_s=t_end - t_submit,
                own_points=pts["handles"] == [[float(hx), float(hy)]] and pts["targets"] == [[float(tx), float(ty)]],
                end=time.time(),
            )
        except Exception as e:  # a refusal by the queue is clean; anything else is a failure
            msg = f"{type(e).__name__}: {e}"
            rec.update(
                status="refused" if "queue is full" in msg.lower() else "failed", error=msg[:300], end=time.time()
            )
        out.append(rec)
        # a session starts its next job after a moment's thought, as a person would
        time.sleep(float(rng.uniform(0.0, 0.5)))
        # refusals retry after a short back-off rather than hammering the queue
        if rec["status"] == "refused":
            time.sleep(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=15, help="jobs per session")
    ap.add_argument("--concurrency", type=int, default=2, help="the app's --concurrency")
    ap.add_argument("--queue-size", type=int, default=64, help="the app's --queue-size")
    ap.add_argument("--steps", type=int, default=10, help="drag steps per job")
    ap.add_argument("--timeout", type=float, default=1800, help="stop the run after this many seconds")
    ap.add_argument("-o", "--out", type=Path, help="write the figures and every job's record here (.json)")
    ap.add_argument("--tracemalloc", action="store_true", help="trace the app's Python allocations (slower)")
    ap.add_argument("--trace-every", type=float, default=30.0, help="seconds between heap records")
    ap.add_argument("--trace-warm", type=float, default=120.0, help="seconds of warm-up before the heap baseline")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tempfile.NamedTemporaryFile(prefix="dragkit-app-load-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "dragkit", "app", "--port", str(port)]
    cmd += ["--concurrency", str(args.concurrency), "--queue-size", str(args.queue_size)]
    trace = Path(log.name).with_suffix(".heap.jsonl")
    if args.tracemalloc:
        cmd[1:3] = ["-c", TRACED_APP]
        env |= {"DK_TRACE_OUT": str(trace), "DK_TRACE_EVERY": str(args.trace_every)}
        env["DK_TRACE_WARM"] = str(args.trace_warm)
    app = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            print(f"the app did not start; see {log.name}", file=sys.stderr)
            return 1
        memory: list[tuple[float, int]] = []
        records: list[dict] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                b = rss_bytes(app.pid)
                if b:
                    memory.append((time.time(), b))
                time.sleep(0.5)

        threading.Thread(target=watch, daemon=True).start()
        t0 = time.time()
        threads = [
            threading.Thread(target=session, args=(url, k, args.jobs, args.steps, records, stop), daemon=True)
            for k in range(args.sessions)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, args.timeout - (time.time() - t0)))
        stop.set()
        wall = time.time() - t0
    finally:
        app.terminate()
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            print("the app did not exit within 30 s of SIGTERM; killed", file=sys.stderr)
            app.kill()
            app.wait()

    done = [r for r in records if r["status"] == "done"]
    ends = sorted(r["end"] for r in records)
    tenth = max(1, len(ends) // 10)

    def mem_between(a: float, b: float) -> float | None:
        vals = [m for t, m in memory if a <= t <= b]
        return statistics.fmean(vals) / 2**20 if vals else None

    def rss_at(t: float) -> float | None:  # the last sample taken at or before t
        before = [m for tm, m in memory if tm <= t]
        return before[-1] / 2**20 if before else None

    done_ends = sorted(r["end"] for r in done)
    tenths = [rss_at(done_ends[max(0, len(done_ends) * k // 10 - 1)]) for k in range(1, 11)] if done_ends else []
    half = [(i + 1, rss_at(t)) for i, t in enumerate(done_ends) if i >= len(done_ends) // 2]
    heap = [json.loads(line) for line in trace.read_text().splitlines()] if args.tracemalloc and trace.exists() else []
    warm = [h for h in heap if h.get("baseline") or "growth_since_warm" in h]

    report = {
        "sessions": args.sessions,
        "jobs_per_session": args.jobs,
        "concurrency": args.concurrency,
        "queue_size": args.queue_size,
        "drag_steps": args.steps,
        "jobs": len(records),
        "done": len(done),
        "refused": sum(r["status"] == "refused" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "saw_other_points": sum(not r.get("own_points", True) for r in done),
        "wall_s": round(wall, 1),
        "throughput_jobs_per_min": round(60 * len(done) / wall, 2),
        "queue_p50_s": pct([r["queue_s"] for r in done], 0.5),
        "queue_p95_s": pct([r["queue_s"] for r in done], 0.95),
        "job_p50_s": pct([r["job_s"] for r in done], 0.5),
        "job_p95_s": pct([r["job_s"] for r in done], 0.95),
        "rss_first_tenth_mib": mem_between(t0, ends[tenth - 1]) if ends else None,
        "rss_last_tenth_mib": mem_between(ends[-tenth - 1] if len(ends) > tenth else t0, ends[-1]) if ends else None,
        "rss_peak_mib": max(m for _, m in memory) / 2**20 if memory else None,
        "rss_after_each_tenth_mib": [round(v, 1) if v is not None else None for v in tenths],
        "rss_growth_second_half_mib_per_100_jobs": slope_per_100([(x, y) for x, y in half if y is not None]),
        "python_heap_after_warm_mib": round(warm[0]["python_heap_bytes"] / 2**20, 1) if warm else None,
        "python_heap_last_mib": round(heap[-1]["python_heap_bytes"] / 2**20, 1) if heap else None,
        "python_heap_growth_top": warm[-1].get("growth_since_warm", [])[:5] if warm else None,
        "errors": sorted({r["error"] for r in records if r["status"] == "failed"})[:10],
        "app_log": log.name,
    }
    for k, v in report.items():
        print(f"{k}: {round(v, 3) if isinstance(v, float) else v}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**report, "records": records}, indent=1) + "\n")
    return 1 if report["failed"] or report["saw_other_points"] else 0


if __name__ == "__main__":
    sys.exit(main())
