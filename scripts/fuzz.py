"""Coverage-guided fuzzing (atheris, libFuzzer) of dragkit's parsers and readers; not part of the tests.

Targets, each fed the fuzzer's bytes:
  drag     ``--drag`` text (:func:`dragkit.interfaces.cli.parse_drag`)
  set      ``--set NAME=VALUE`` text (:func:`dragkit.core.params.parse_assignment`)
  image    an image file (:func:`dragkit.utils.io.load_image`)
  mask     a mask file for a 16x12 image (:func:`dragkit.utils.io.load_mask`)
  points   a Drag100 ``points.json`` (:func:`dragkit.bench.datasets.read_drag100`)
  bundle   a result bundle's ``sample.json`` (:func:`dragkit.bench.datasets.read_bundles`)
  pickle   a DragBench ``meta_data.pkl``, restricted unpickler (:func:`dragkit.bench.datasets.read_dragbench`)

A target passes an input when it returns a value or raises :class:`dragkit.core.errors.DragkitError`; any other
exception is a finding (atheris stops and writes the input as ``crash-*``).

    pip install -e ".[fuzz]"
    python scripts/fuzz.py image -atheris_runs=200000
    python scripts/fuzz.py all --seconds 120      # every target for a while each; prints inputs tried per target
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

# imported (and instrumented for coverage) by the process that fuzzes one target, not by the "all" driver
parse_drag = parse_assignment = load_image = load_mask = read_bundles = read_drag100 = read_dragbench = None
DragkitError: type = Exception


def _load() -> None:
    global parse_drag, parse_assignment, load_image, load_mask, read_bundles, read_drag100, read_dragbench
    global DragkitError
    import atheris

    with atheris.instrument_imports(include=["dragkit"]):
        from dragkit.bench.datasets import read_bundles, read_drag100, read_dragbench
        from dragkit.core.errors import DragkitError
        from dragkit.core.params import parse_assignment
        from dragkit.interfaces.cli import parse_drag
        from dragkit.utils.io import load_image, load_mask


WORK = Path(tempfile.mkdtemp(prefix="dragkit-fuzz-"))


def _folder(name: str) -> Path:
    d = WORK / name / "cat" / "s1"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _seed_image(path: Path) -> None:
    if not path.exists():
        Image.new("RGB", (16, 12), "gray").save(path)


def t_drag(data: bytes) -> None:
    parse_drag(data.decode("utf-8", "replace"))


def t_set(data: bytes) -> None:
    parse_assignment(data.decode("utf-8", "replace"))


def t_image(data: bytes) -> None:
    f = WORK / "img"
    f.write_bytes(data)
    load_image(f)


def t_mask(data: bytes) -> None:
    f = WORK / "mask"
    f.write_bytes(data)
    load_mask(f, (16, 12))


def t_points(data: bytes) -> None:
    d = _folder("d100")
    _seed_image(d / "original.png")
    (d / "points.json").write_bytes(data)
    read_drag100(WORK / "d100")


def t_bundle(data: bytes) -> None:
    d = _folder("bundle")
    _seed_image(d / "source.png")
    (d / "sample.json").write_bytes(data)
    read_bundles(WORK / "bundle")


def t_pickle(data: bytes) -> None:
    d = _folder("db")
    _seed_image(d / "original_image.png")
    (d / "meta_data.pkl").write_bytes(data)
    read_dragbench(WORK / "db")


TARGETS = {
    "drag": t_drag,
    "set": t_set,
    "image": t_image,
    "mask": t_mask,
    "points": t_points,
    "bundle": t_bundle,
    "pickle": t_pickle,
}


def seeds(name: str) -> list[bytes]:
    """A few valid inputs to start from (the fuzzer mutates them)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), "white").save(buf, format="PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), "white").save(buf, format="JPEG")
    return {
        "drag": [b"40,44:46,44", b" 1.5 , 2:3,4 "],
        "set": [b"r_p=6", b"latent_lr=0.01", b"method=x"],
        "image": [png, buf.getvalue()],
        "mask": [png],
        "points": [json.dumps({"points": [[1, 2], [3, 4]], "prompt": "a"}).encode()],
        "bundle": [json.dumps({"id": "cat/s1", "handles": [[1, 2]], "targets": [[3, 4]]}).encode()],
        "pickle": [pickle.dumps({"points": [[1, 2], [3, 4]], "mask": None, "prompt": ""})],
    }[name]


def one(data: bytes, target) -> None:
    with contextlib.suppress(DragkitError):
        target(data)


def run_target(name: str, argv: list[str]) -> None:
    import atheris

    _load()
    corpus = WORK / f"corpus-{name}"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(seeds(name)):
        (corpus / f"seed{i}").write_bytes(s)
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *argv, str(corpus)], lambda data: one(data, target))
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--seconds", type=int, default=60, help="with 'all': how long each target runs")
    args, rest = ap.parse_known_args()
    if args.target != "all":
        try:
            run_target(args.target, rest)
        finally:
            shutil.rmtree(WORK, ignore_errors=True)
        return 0
    # every target in its own process (atheris.Fuzz never returns), for a while each; libFuzzer prints its count
    rows, found = [], 0
    for name in TARGETS:
        t0 = time.time()
        p = subprocess.run(
            [sys.executable, __file__, name, f"-max_total_time={args.seconds}", "-print_final_stats=1"],
            capture_output=True,
            text=True,
        )
        runs = next(
            (ln.split(":")[-1].strip() for ln in p.stderr.splitlines() if "stat::number_of_executed_units" in ln), "?"
        )
        crashed = p.returncode != 0
        found += crashed
        finding = next((ln for ln in p.stderr.splitlines() if "Uncaught Python exception" in ln or "Error" in ln), "")
        rows.append((name, runs, round(time.time() - t0), "FOUND: " + finding if crashed else "none"))
        print(f"{name}: {runs} inputs in {rows[-1][2]} s, findings: {rows[-1][3]}", flush=True)
    print("\n| target | inputs tried | seconds | findings |\n|---|---:|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    shutil.rmtree(WORK, ignore_errors=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
