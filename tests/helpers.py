"""What several test files share, in one place: the command line as a subprocess, the app as a child server, small
fixed images, the state of a UNet that must come back after an edit, and the diffusion engine's sampling pair."""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def dragkit(*args: Any, cwd: Any = None, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m dragkit ARGS`` as a user runs it: its exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "dragkit", *map(str, args)],
        capture_output=True,
        text=True,
        env={**ENV, **(env_extra or {})},
        cwd=cwd,
    )


def start_dragkit(*args: Any, env_extra: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    """``python -m dragkit ARGS`` started in the background."""
    cmd = [sys.executable, "-m", "dragkit", *map(str, args)]
    return subprocess.Popen(cmd, env={**ENV, **(env_extra or {})}, text=True, **popen)


class App:
    """``dragkit app --port 0`` as a child process: it binds a free port and says which on stdout once it serves
    (the readiness signal); ``url`` is what it said. Everything else it prints goes to ``log``."""

    def __init__(self, log: Path, *args: Any, timeout: float = 120) -> None:
        env = {"GRADIO_ANALYTICS_ENABLED": "False"}
        self.log = log
        self.proc = start_dragkit(
            "app", "--port", "0", *args, env_extra=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.url = self._wait_for_url(timeout)

    def _wait_for_url(self, timeout: float) -> str:
        """Read the child's output (raw bytes from the pipe: a buffered reader could hold the line while ``select``
        sees an empty pipe) until the line that says where it serves."""
        deadline = time.monotonic() + timeout
        fd, pending = self.proc.stdout.fileno(), b""
        with self.log.open("wb") as out:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise AssertionError(f"the app did not say it serves within {timeout} s (log: {self.log})")
                ready, _, _ = select.select([fd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"the app exited with {self.proc.wait()} before serving (log: {self.log})")
                out.write(chunk)
                pending += chunk
                for line in pending.decode(errors="replace").splitlines():
                    if line.startswith("dragkit app: serving on "):
                        self._drain()
                        return line.removeprefix("dragkit app: serving on ").strip()

    def _drain(self) -> None:
        """Keep copying the child's output to the log, so that a full pipe never blocks it."""

        def copy() -> None:
            with self.log.open("ab") as out:
                while chunk := os.read(self.proc.stdout.fileno(), 65536):
                    out.write(chunk)

        threading.Thread(target=copy, daemon=True).start()

    def stop(self, sig: int | None = None, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def image(w: int = 96, h: int = 80, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (bicubic-enlarged noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.uint8)
    return Image.fromarray(base).resize((w, h), Image.BICUBIC)


def state_of(unet: torch.nn.Module) -> tuple:
    """Everything an edit may touch on a UNet and must restore: hooks, attention processors, LoRA weights, peft."""
    from dragkit.engines import diffusion as D

    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())
    procs = {k: type(m.processor).__name__ for k, m in D.attention_modules(unet).items()}
    lora = [n for n, _ in unet.named_parameters() if "lora" in n]
    peft_layers = [n for n, m in unet.named_modules() if type(m).__module__.startswith("peft")]
    return hooks, procs, lora, peft_layers, getattr(unet, "peft_config", None)


def sampling_pair(pipe: Any) -> tuple:
    """A source latent and a perturbed edited one at step 3 of a 10-step schedule, with one drag on the (20, 24)
    feature grid of block 2: ``z_src, z_edit, embeds, mutual, handles, targets``."""
    from dragkit.engines import diffusion as D

    g = torch.Generator().manual_seed(0)
    z_src = torch.randn(1, 4, 10, 12, generator=g)
    z_edit = z_src + 0.3 * torch.randn(1, 4, 10, 12, generator=g)
    embeds = pipe.engine.encode_prompt("a photo")
    pipe.engine.timesteps(10)
    h = torch.tensor([[8.0, 6.0]], dtype=torch.float64)
    t = torch.tensor([[8.0, 14.0]], dtype=torch.float64)
    return z_src, z_edit, embeds, D.self_attentions(pipe.unet), h, t


def sample(pipe: Any, z_src: torch.Tensor, z_edit: torch.Tensor, embeds: Any, start: int, mutual, **kw: Any):
    """The engine's denoising of the batch ``[source, edited]`` from ``timesteps[start]``, as one ``(2, ...)``
    tensor (features for guides from block 2 on the (20, 24) grid)."""
    kw = {"feature_block": 2, "grid": (20, 24), "progress": False, **kw}
    src, edited = pipe.engine.denoise(z_edit, embeds, start, z_src=z_src, mutual=mutual, **kw)
    return torch.cat([src, edited])


def final_features(pipe: Any, z: torch.Tensor, embeds: Any) -> torch.Tensor:
    """Both branches' block-2 features of a sampled pair at the last timestep, on the (20, 24) grid."""
    from dragkit.engines import diffusion as D

    engine = pipe.engine
    out = D.unet_forward(pipe.unet, z, pipe.scheduler.timesteps[-1], engine.cond(embeds, 2), [2], need_eps=False)
    return torch.nn.functional.interpolate(out.features[2].float(), size=(20, 24), mode="bilinear")


# a diffusion edit on the tiny SD in a few seconds, as CLI --set arguments
TINY_SD_ARGS = [
    "--set",
    "lora=none",
    "--set",
    "inference_steps=10",
    "--set",
    "drag_steps=3",
    "--set",
    "resize_width=0",
]


def make_drag100(root: Path, n: int = 4, size: int = 64, bad: int | None = None) -> Path:
    """A Drag100-format dataset: ``<category>/<sample>/original.jpg, mask.png, points.json``."""
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / ("cats" if i % 2 else "dogs") / f"s{i}"
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / "original.jpg")
        mask = np.zeros((size, size), np.uint8)
        mask[10:50, 10:50] = 255
        Image.fromarray(mask).save(d / "mask.png")
        target_x = size + 20 if i == bad else 30 + i
        (d / "points.json").write_text(json.dumps({"points": [[20, 20 + i], [target_x, 24], [40, 40], [44, 36]]}))
    return root


# an intention reasoner's good answer (two intentions, out of order)
GOOD = {
    "intentions": [
        {"object": "neck", "source_prompt": "a horse", "target_prompt": "a horse, longer neck", "confidence": 0.5},
        {"object": "head", "source_prompt": "a horse", "target_prompt": "a horse, raised head", "confidence": 0.8},
    ]
}


class QuietServer(ThreadingHTTPServer):
    """A local test server that does not print a traceback when a client hangs up before its answer (a client's
    timeout test does so on purpose). Printing one from a server thread while the main thread runs ``ast.parse``
    trips CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905): 3.11's tracebacks parse too."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Endpoint:
    """A fake OpenAI-compatible chat endpoint on a free local port; ``answers`` are served in order."""

    def __init__(self, answers, delay=0.0, status=200):
        self.answers, self.delay, self.status, self.requests = list(answers), delay, status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                time.sleep(outer.delay)
                content = outer.answers.pop(0) if outer.answers else "{}"
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def png_claiming(w, h):
    """A few-hundred-byte PNG whose header claims ``w``x``h`` (a decompression bomb's shape)."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
