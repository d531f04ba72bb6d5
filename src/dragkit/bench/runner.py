"""``dragkit bench``: run one method over a dataset into a run folder, resumably, on one process or many.

A run folder::

    RUNDIR/run.json                                  what was run (method, parameters, model, dataset, seed)
    RUNDIR/samples/<category>/<sample>/source.png    the sample's image, as the method saw it
                                      sample.json    its points, prompt and id
                                      mask.png       its mask, when it has one
                                      result.png     the edit, and result.json its record (+ "bench": time,
                                      result.json    peak memory, process); or error.json when it failed

Each sample's folder is written whole into a temporary folder and renamed into place, so a folder that exists is
complete. A rerun of the same command skips the samples that have ``result.json`` and runs the rest again
(failed ones included), so an interrupted run resumes without losing or repeating a finished sample.

Under ``accelerate launch`` or ``torchrun`` the samples are split between the processes (accelerate's
``PartialState``: contiguous shares in id order, each process on its own device); every process writes its own
samples' folders and nothing else, so no locking is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.errors import DragkitError, InputError, ParameterError
from ..methods import get_method
from ..utils.io import make_tempdir, write_json, write_png, writing
from ..utils.profiler import StageProfiler
from .datasets import Sample, open_dataset, safe_id
from .gan_sets import generator_key

RUN_KEYS = ("method", "model", "overrides", "dataset", "seed")


@dataclass
class BenchSummary:
    total: int  # samples in this process's share
    done_before: int  # finished by an earlier run (skipped)
    ran: int
    failed: int
    seconds: float
    rank: int = 0
    world: int = 1


def sample_dir(run: Path, sample: Sample) -> Path:
    """``RUN/samples/<category>/<name>``; an id that would leave that folder is refused."""
    if not safe_id(sample.id):
        raise InputError(f"sample id {sample.id!r}: expected CATEGORY/NAME of plain names")
    category, name = sample.id.split("/", 1)
    return run / "samples" / category / name


def is_done(run: Path, sample: Sample) -> bool:
    return (sample_dir(run, sample) / "result.json").is_file()


def _distributed(device: str) -> Any:
    """accelerate's process state when launched on several processes (CPU processes talk over gloo), else
    ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        from accelerate import PartialState
    except ImportError:
        raise ParameterError("a multi-process launch needs accelerate: pip install 'dragkit[diffusion]'") from None
    return PartialState(cpu=device == "cpu")


def write_run_record(run: Path, record: dict[str, Any]) -> None:
    """``run.json``, or a check that the one there describes the same run (resuming a different run into the same
    folder would mix results)."""
    path = run / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in RUN_KEYS if old.get(k) != record.get(k)]
        if diff:
            shown = "; ".join(f"{k}: {old.get(k)!r} there, {record.get(k)!r} now" for k in diff)
            raise InputError(f"{run} holds a different run ({shown}); resume with the same settings or use another -o")
        return
    write_json(path, record)


def _write_bundle(run: Path, sample: Sample, image: Image.Image | None, extra: dict[str, Any]) -> None:
    """Write a sample's folder whole — its record, source image and mask, plus ``extra`` (file name → PIL image or
    JSON-ready object) — into a temporary folder, then rename it into place."""
    final = sample_dir(run, sample)
    with writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_tempdir(final.parent, final.name)
    try:
        write_json(tmp / "sample.json", sample.meta())
        if image is not None:
            write_png(tmp / "source.png", image)
        if sample.mask is not None:
            write_png(tmp / "mask.png", Image.fromarray(sample.mask.astype(np.uint8) * 255))
        for name, content in extra.items():
            if isinstance(content, Image.Image):
                write_png(tmp / name, content)
            else:
                write_json(tmp / name, content)
        with writing(final):
            if final.exists():  # an earlier failure's folder: replaced by this attempt
                shutil.rmtree(final)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_bench(
    dataset: str | os.PathLike,
    method: str,
    run: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    model: str | None = None,
    device: str = "cpu",
    dtype: Any = None,
    categories: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 42,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> BenchSummary:
    """Run ``method`` on every sample of ``dataset`` not yet done in ``run`` (see the module's docstring)."""
    from tqdm.auto import tqdm

    overrides = dict(overrides or {})
    m = get_method(method)
    params = m.resolve(overrides)  # every name and value checked before any work
    samples = open_dataset(dataset, categories=categories, limit=limit)
    run = Path(run)
    state = _distributed(device)
    rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    if state is not None and device != "cpu":
        device = str(state.device)  # each process on its own accelerator
    record = {
        "method": method,
        "model": model,
        "overrides": overrides,
        "dataset": str(Path(dataset).resolve()),
        "seed": seed,
        "params": params,
        "categories": list(categories or []),
        "limit": limit,
    }
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        write_run_record(run, record)
        for stale in run.glob("samples/*/.*.part"):  # a killed run's half-written folders: never renamed into place
            shutil.rmtree(stale, ignore_errors=True)
    if state is not None:
        state.wait_for_everyone()
        if rank != 0:
            write_run_record(run, record)  # only checks: the main process wrote it
    mine = list(samples)
    if state is not None:
        with state.split_between_processes(samples) as share:
            mine = list(share)
    pending = [s for s in mine if not is_done(run, s)]
    done_before = len(mine) - len(pending)
    if done_before:
        echo(f"resuming {run}: {done_before} of {len(mine)} samples done, {len(pending)} to run")
    t_start = time.perf_counter()
    ran = failed = 0
    pipe: Any = None
    if pending:  # a finished run loads nothing; a model that cannot load stops the run before any sample
        from ..pipelines import load_pipeline

        pipe = load_pipeline(m.engine, model, device, dtype, quiet=True)
    bar = tqdm(
        pending,
        desc=f"bench {method}" + (f" [{rank}/{world}]" if world > 1 else ""),
        position=rank,
        disable=not progress,
        unit="sample",
    )
    for sample in bar:
        bar.set_postfix_str(sample.id, refresh=False)
        image = None
        try:
            image = sample.image()
            req = sample.request(seed, image)
            prof = StageProfiler(torch.device(device))
            kwargs = dict(overrides)
            if sample.generated and m.engine == "gan" and sample.generated["generator"] == generator_key(model):
                kwargs["code"] = pipe.generate(sample.generated["seed"]).code  # the seed's own code: no fit
            with prof.stage("edit"):  # wall time and peak memory of the whole call, the same way for every method
                result = pipe(req, method=method, progress=False, **kwargs)
        except (DragkitError, RuntimeError, ValueError, OSError, MemoryError) as e:  # recorded; the run goes on
            failed += 1
            err = {
                "id": sample.id,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=8),
                "rank": rank,
            }
            _write_bundle(run, sample, image, {"error.json": err})
            echo(f"sample {sample.id} failed: {err['error']}")
            continue
        edit = prof.stages["edit"]
        bench = {
            "seconds": round(edit["seconds"], 4),
            "peak_memory_bytes": edit["peak_bytes"],
            "memory": edit["memory"],
            "rank": rank,
            "device": device,
        }
        record = {**result.to_dict(), "sample": sample.id, "bench": bench}
        _write_bundle(run, sample, image, {"result.png": result.image, "result.json": record})
        ran += 1
    bar.close()
    summary = BenchSummary(len(mine), done_before, ran, failed, round(time.perf_counter() - t_start, 2), rank, world)
    if state is not None:
        state.wait_for_everyone()
    return summary


def run_status(run: str | os.PathLike) -> dict[str, Any]:
    """How far a run folder is: samples with a result, with an error, and the run's record."""
    run = Path(run)
    if not (run / "run.json").is_file():
        raise InputError(f"{run}: not a dragkit run (no run.json); make one with dragkit bench")
    record = json.loads((run / "run.json").read_text())
    done = sorted(p.parent for p in run.glob("samples/*/*/result.json"))
    failed = sorted(p.parent for p in run.glob("samples/*/*/error.json"))
    return {"run": record, "done": len(done), "failed": len(failed)}
