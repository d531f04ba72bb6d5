"""``dragkit eval RUNDIR``: DragBench's measures over a run folder (:mod:`dragkit.bench.runner`), per category and
overall.

- **MD (DIFT)**, the official mean distance (EVALUATION.md): DIFT features of SD 2.1
  (:mod:`dragkit.bench.metrics.dift`; model configurable), whole-image cosine argmax, mean over **all pairs** of
  the run; torch seeded 42 once.
- **MD (LPIPS-alex)**: the same matching with the offline LPIPS-AlexNet features (:class:`AlexFeatures`).
  Labelled as such: it is not the official MD and its numbers are not comparable with papers'.
- **IF** = 1 − LPIPS-alex v0.1 at 224×224 (bilinear, aspect not kept), mean over images; LPIPS is reported too.
- **DAI** (GoodDrag) at radii 1, 5, 10, 20: the squared difference (channels summed, images in [0, 1]) between
  the source's patch at each handle and the result's patch at its target, summed over pairs, divided by the
  number of pairs once (GoodDrag's code divides twice; we do not) and by the patch size (1 + 2r)²; mean over
  images. Offsets that fall outside either image are left out.
- **realism** inside the editable region (the sample's mask, or 8/64 of the image's side around each drag without
  one): :class:`dragkit.bench.metrics.PatchRealism`, the 95th percentile of each local patch's LPIPS-AlexNet distance
  to the nearest real patch (the source's, within the drag's reach; with ``--realism-reference dcgan-faces`` also
  DCGAN reference faces at about the same place), lower is better, 0 for an untouched region; ``torn``: the share of
  edits over its threshold (``docs/realism.md``).
- **time and peak memory** per edit, from the run's own records.
- **GScore** (optional): a vision-language judge through an OpenAI-compatible endpoint rates each result's
  naturalness 1–10 (:class:`GScoreJudge`).

Each sample's measures are stored beside it (``eval.json``, keyed by the measuring configuration), so a second
``dragkit eval`` reuses them and an interrupted one resumes.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.errors import InputError, ModelError
from ..utils.io import load_image, write_bytes_atomic, write_json, write_png
from .datasets import Sample, read_bundles

DAI_RADII = (1, 5, 10, 20)
MD_FEATURES = ("dift", "alex")


def _inside(y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    return (y >= 0) & (y < h) & (x >= 0) & (x < w)


def dai(source: np.ndarray, result: np.ndarray, handles: Sequence, targets: Sequence, radius: int) -> float:
    """GoodDrag's drag accuracy index for one image (see the module's docstring); ``source``, ``result``:
    ``(H, W, 3)`` in [0, 1] of the same size; points ``(x, y)``, rounded to pixels."""
    h, w = source.shape[:2]
    total = 0.0
    for (hx, hy), (tx, ty) in zip(handles, targets, strict=True):
        hx, hy, tx, ty = round(hx), round(hy), round(tx), round(ty)
        ys = np.arange(-radius, radius + 1)
        oy, ox = np.meshgrid(ys, ys, indexing="ij")
        ok = _inside(hy + oy, hx + ox, h, w) & _inside(ty + oy, tx + ox, h, w)
        a = source[hy + oy[ok], hx + ox[ok]]
        b = result[ty + oy[ok], tx + ox[ok]]
        total += float(np.square(a - b).sum())
    return total / len(handles) / (1 + 2 * radius) ** 2


@dataclass
class GScoreJudge:
    """GScore (GoodDrag): a vision-language model rates an edited image's naturalness from 1 to 10, through any
    OpenAI-compatible chat endpoint (the transport, key handling and timeouts of
    :class:`dragkit.parts.intentions.LLMReasoner`)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0

    PROMPT = (
        "Rate how natural and free of artifacts this edited image looks, from 1 (broken) to 10 (a real photo). "
        'Answer with JSON only: {"score": N}.'
    )

    def __call__(self, image: Any) -> float:
        from ..parts.intentions import LLMReasoner, ReasonerError, image_data_url

        client = LLMReasoner(self.base_url, self.model, self.api_key, self.timeout)
        content = [
            {"type": "text", "text": self.PROMPT},
            {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        ]
        answer = client.request([{"role": "user", "content": content}])
        m = re.search(r'"score"\s*:\s*([0-9]+(?:\.[0-9]+)?)', answer) or re.fullmatch(
            r"\s*([0-9]+(?:\.[0-9]+)?)\s*", answer
        )
        if not m or not 1 <= float(m.group(1)) <= 10:
            raise ReasonerError(f"the GScore judge answered {answer[:80]!r}, not a score from 1 to 10")
        return float(m.group(1))


def load_dift(model: str) -> Any:
    """DIFT's Stable Diffusion checkpoint (hub id or folder) in float32, through the same loading code as every
    diffusion model (one-line :class:`ModelError` when it cannot be had)."""
    from ..pipelines.diffusion import DragDiffusionPipeline

    return DragDiffusionPipeline.from_pretrained(model, dtype=torch.float32).engine


REALISM_REFERENCES = ("none", "dcgan-faces")


def realism_meter(reference: str) -> Any:
    """The realism measure for a run: judged by each sample's source alone (``none``: photos), or also by the DCGAN
    reference faces (``dcgan-faces``: runs on 64-px faces)."""
    from .metrics import PatchRealism, reference_faces

    if reference not in REALISM_REFERENCES:
        raise InputError(f"--realism-reference {reference}: choose {' or '.join(REALISM_REFERENCES)}")
    return PatchRealism(reference_faces() if reference == "dcgan-faces" else None)


def realism_region(sample: Sample, size: tuple[int, int]) -> np.ndarray:
    """Where realism is judged: the sample's mask, or without one 8/64 of the image's longer side around each drag."""
    from ..core.geometry import drag_region

    w, h = size
    if sample.mask is not None and sample.mask.shape == (h, w) and sample.mask.any():
        return np.asarray(sample.mask, bool)
    pairs = list(zip(sample.handles, sample.targets, strict=True))
    return drag_region((h, w), pairs, max(1.0, 8 * max(w, h) / 64))


def _config(md: Sequence[str], dift_model: str, judge: GScoreJudge | None, realism: Any = None) -> dict[str, Any]:
    return {
        "md": sorted(md),
        "dift_model": dift_model if "dift" in md else None,
        "gscore": None if judge is None else judge.model,
        "dai_radii": list(DAI_RADII),
        "realism": None if realism is None else realism.name,
    }


def measure_sample(
    sample: Sample, folder: Path, extractors: dict[str, Any], judge: GScoreJudge | None, realism: Any = None
) -> dict[str, Any]:
    """Every measure of one finished sample (its folder has ``result.png`` and ``result.json``)."""
    from .metrics import lpips_distance, mean_distance

    source = sample.image()
    result = load_image(folder / "result.png")
    if result.size != source.size:
        result = result.resize(source.size)
    bench = json.loads((folder / "result.json").read_text()).get("bench", {})
    row: dict[str, Any] = {"id": sample.id, "category": sample.category, "pairs": len(sample.handles)}
    for name, ex in extractors.items():
        row[f"md_{name}"] = [
            round(d, 4)
            for d in mean_distance(source, result, sample.handles, sample.targets, ex, sample.prompt).distances
        ]
    row["lpips"] = round(lpips_distance(source, result, resize=(224, 224)), 6)
    row["if"] = round(1 - row["lpips"], 6)
    a = np.asarray(source, dtype=np.float64) / 255
    b = np.asarray(result, dtype=np.float64) / 255
    row["dai"] = {str(r): round(dai(a, b, sample.handles, sample.targets, r), 6) for r in DAI_RADII}
    row["drag_length"] = [round(math.dist(h, t), 4) for h, t in zip(sample.handles, sample.targets, strict=True)]
    if realism is not None:
        score = realism(source, result, realism_region(sample, source.size), sample.handles, sample.targets)
        row["realism"], row["torn"] = round(score.distance, 5), score.torn
    row["seconds"] = bench.get("seconds")
    row["peak_memory_bytes"] = bench.get("peak_memory_bytes")
    if judge is not None:
        row["gscore"] = judge(result)
    return row


def aggregate(rows: list[dict[str, Any]], md: Sequence[str]) -> dict[str, Any]:
    """MD over all pairs; IF, LPIPS, DAI and GScore over images; time and memory over edits."""
    out: dict[str, Any] = {"samples": len(rows), "pairs": sum(r["pairs"] for r in rows)}
    for name in md:
        pairs = [d for r in rows for d in r[f"md_{name}"]]
        out[f"md_{name}"] = round(statistics.fmean(pairs), 4) if pairs else None
    lengths = [d for r in rows for d in r["drag_length"]]
    out["mean_drag_length"] = round(statistics.fmean(lengths), 4) if lengths else None
    for k in ("if", "lpips", "gscore", "realism"):
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = round(statistics.fmean(vals), 6) if vals else None
    judged = [r["torn"] for r in rows if r.get("torn") is not None]
    out["torn"] = round(sum(judged) / len(judged), 4) if judged else None
    out["dai"] = (
        {str(r): round(statistics.fmean(x["dai"][str(r)] for x in rows), 6) for r in DAI_RADII} if rows else {}
    )
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    out["seconds_mean"] = round(statistics.fmean(secs), 4) if secs else None
    out["seconds_median"] = round(statistics.median(secs), 4) if secs else None
    mem = [r["peak_memory_bytes"] for r in rows if r.get("peak_memory_bytes") is not None]
    out["peak_memory_bytes_max"] = max(mem) if mem else None
    return out


def evaluate_run(
    run: str | os.PathLike,
    *,
    md: Sequence[str] = MD_FEATURES,
    dift_model: str = "stabilityai/stable-diffusion-2-1",
    device: str = "cpu",
    judge: GScoreJudge | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    realism_reference: str | None = "none",
) -> dict[str, Any]:
    """Measure every finished sample of ``run``; write ``metrics.json`` and ``metrics.md`` there; return the
    metrics (``overall``, ``categories``, ``samples``, ``failed``, ``missing``). ``realism_reference``: see
    :func:`realism_meter` (``None``: no realism)."""
    from tqdm.auto import tqdm

    run = Path(run)
    if not (run / "run.json").is_file():
        raise InputError(f"{run}: not a dragkit run (no run.json); make one with dragkit bench")
    unknown = [m for m in md if m not in MD_FEATURES]
    if unknown:
        raise InputError(f"--md {','.join(unknown)}: choose from {', '.join(MD_FEATURES)}")
    record = json.loads((run / "run.json").read_text())
    samples = read_bundles(run)
    realism = None if realism_reference is None else realism_meter(realism_reference)
    config = _config(md, dift_model, judge, realism)
    folders = {s.id: run / "samples" / s.id for s in samples}
    done = [s for s in samples if (folders[s.id] / "result.json").is_file()]
    failed = sorted(p.parent.relative_to(run / "samples").as_posix() for p in run.glob("samples/*/*/error.json"))
    cached: dict[str, dict] = {}
    for s in done:
        path = folders[s.id] / "eval.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("config") == config:
                cached[s.id] = old["row"]
    todo = [s for s in done if s.id not in cached]
    extractors: dict[str, Any] = {}
    if todo:
        torch.manual_seed(42)  # once per run, as the official script
        if "dift" in md:
            from .metrics.dift import DiftFeatures

            try:
                extractors["dift"] = DiftFeatures(load_dift(dift_model), device=device)
            except ModelError as e:
                raise ModelError(
                    "measure without DIFT's model with --md alex (LPIPS-AlexNet, offline), or give a local copy with "
                    f"--dift-model FOLDER; the official MD needs {dift_model!r} ({e})"
                ) from None
        if "alex" in md:
            from .metrics import AlexFeatures

            extractors["alex"] = AlexFeatures()
    if cached:
        echo(f"{len(cached)} samples measured before with the same settings; {len(todo)} to measure")
    for s in tqdm(todo, desc="eval", disable=not progress, unit="sample"):
        row = measure_sample(s, folders[s.id], extractors, judge, realism)
        write_json(folders[s.id] / "eval.json", {"config": config, "row": row})
        cached[s.id] = row
    rows = [cached[s.id] for s in done]
    categories = sorted({r["category"] for r in rows})
    metrics = {
        "run": {k: record.get(k) for k in ("method", "model", "overrides", "dataset", "seed")},
        "config": config,
        "md_labels": {
            "dift": f"MD (DIFT, {dift_model}; official protocol)",
            "alex": "MD (LPIPS-alex features; not the official MD)",
        },
        "overall": aggregate(rows, md),
        "categories": {c: aggregate([r for r in rows if r["category"] == c], md) for c in categories},
        "failed": failed,
        "missing": [s.id for s in samples if s.id not in cached and s.id not in failed],
        "samples": rows,
    }
    write_json(run / "metrics.json", metrics)
    write_bytes_atomic(run / "metrics.md", metrics_markdown(metrics).encode())
    if rows:
        write_png(run / "metrics.png", metrics_chart(metrics))
        write_png(run / "contact_sheet.png", contact_sheet(run, [s for s in done if s.id in cached]))
    return metrics


def metrics_chart(metrics: dict[str, Any]) -> Image.Image:
    """Per-category bars of each MD measured and of IF (``metrics.png``)."""
    from ..utils.viz import bar_chart, stack

    names = [*metrics["categories"], "all"]
    aggs = [*metrics["categories"].values(), metrics["overall"]]
    charts = []
    for key in ("md_dift", "md_alex"):
        if any(a.get(key) is not None for a in aggs):
            title = metrics["md_labels"][key.split("_")[1]] + ", pixels, lower is better"
            charts.append(bar_chart(names, [a.get(key) for a in aggs], title))
    charts.append(bar_chart(names, [a.get("if") for a in aggs], "IF = 1 - LPIPS-alex at 224x224, higher is better"))
    if any(a.get("realism") is not None for a in aggs):
        title = "realism in the edited region (patch distance to the nearest real patch), lower is better"
        charts.append(bar_chart(names, [a.get("realism") for a in aggs], title))
    return stack(charts)


def contact_sheet(run: Path, samples: Sequence[Sample], limit: int = 60, thumb: int = 160) -> Image.Image:
    """Source | result pairs with the points drawn, four pairs a row, the first ``limit`` samples
    (``contact_sheet.png``)."""
    from PIL import ImageDraw

    from ..utils.viz import draw_points, side_by_side, stack

    tiles = []
    for s in samples[:limit]:
        pair = []
        for path in (run / "samples" / s.id / "source.png", run / "samples" / s.id / "result.png"):
            im = load_image(path)
            k = thumb / max(im.size)
            small = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.BILINEAR)
            pts = [[(x * k, y * k) for x, y in p] for p in (s.handles, s.targets)]
            pair.append(draw_points(small, pts[0], pts[1]))
        tile = side_by_side(pair)
        canvas = Image.new("RGB", (2 * thumb + 4, thumb + 14), "white")
        canvas.paste(tile, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), s.id[:48], fill="black")
        tiles.append(canvas)
    rows = [side_by_side(tiles[i : i + 4], gap=12) for i in range(0, len(tiles), 4)]
    return stack(rows)


def _fmt(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


COLUMNS = [
    ("MD (DIFT) ↓", lambda a: _fmt(a.get("md_dift"))),
    ("MD (LPIPS-alex) ↓", lambda a: _fmt(a.get("md_alex"))),
    ("IF ↑", lambda a: _fmt(a.get("if"), 4)),
    ("LPIPS ↓", lambda a: _fmt(a.get("lpips"), 4)),
    ("realism ↓", lambda a: _fmt(a.get("realism"), 4)),
    ("torn ↓", lambda a: "–" if a.get("torn") is None else f"{100 * a['torn']:.0f}%"),
    *[(f"DAI r={r} ↓", lambda a, r=r: _fmt((a.get("dai") or {}).get(str(r)), 4)) for r in DAI_RADII],
    ("GScore ↑", lambda a: _fmt(a.get("gscore"))),
    ("s / edit", lambda a: _fmt(a.get("seconds_mean"))),
    (
        "peak MiB",
        lambda a: _fmt(None if a.get("peak_memory_bytes_max") is None else a["peak_memory_bytes_max"] / 2**20, 0),
    ),
]


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """The per-category and overall table of a run's metrics."""
    r = metrics["run"]
    cols = [c for c in COLUMNS if any(c[1](a) != "–" for a in [metrics["overall"], *metrics["categories"].values()])]
    head = "| category | samples | pairs | drag length | " + " | ".join(c[0] for c in cols) + " |"
    lines = [
        f"# {r['method']} on {Path(r['dataset']).name}" + (f" ({r['model']})" if r.get("model") else ""),
        "",
        "MD (DIFT) is DragBench's official mean distance; MD (LPIPS-alex) uses the offline LPIPS-AlexNet features "
        "and is not comparable with published MD. IF = 1 − LPIPS-alex at 224×224. Realism: inside the editable "
        "region, each patch's distance to the nearest real patch (95th percentile; 0 = untouched); torn: the share "
        "of edits over its threshold (docs/realism.md).",
        "",
        head,
        "|---|" + "---:|" * (3 + len(cols)),
    ]
    for name, a in [*metrics["categories"].items(), ("**all**", metrics["overall"])]:
        lines.append(
            f"| {name} | {a['samples']} | {a['pairs']} | {_fmt(a['mean_drag_length'])} | "
            + " | ".join(c[1](a) for c in cols)
            + " |"
        )
    if metrics["failed"]:
        lines += ["", f"Failed samples ({len(metrics['failed'])}): " + ", ".join(metrics["failed"])]
    if metrics["missing"]:
        lines += ["", f"Not run yet ({len(metrics['missing'])}): resume the bench to finish them."]
    return "\n".join(lines) + "\n"


def compare_markdown(runs: Sequence[str | os.PathLike]) -> str:
    """Side by side: the overall metrics of several evaluated runs."""
    metrics = []
    for run in runs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise InputError(f"{run}: no metrics.json; run dragkit eval {run} first")
        metrics.append((Path(run), json.loads(path.read_text())))
    cols = [c for c in COLUMNS if any(c[1](m["overall"]) != "–" for _, m in metrics)]
    lines = [
        "| run | method | samples | pairs | " + " | ".join(c[0] for c in cols) + " |",
        "|---|---|---:|---:|" + "---:|" * len(cols),
    ]
    for run, m in metrics:
        a = m["overall"]
        lines.append(
            f"| {run.name} | `{m['run']['method']}` | {a['samples']} | {a['pairs']} | "
            + " | ".join(c[1](a) for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"
