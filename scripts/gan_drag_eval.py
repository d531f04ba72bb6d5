"""Real-weights evidence: seeded random drags on generated faces, judged independently, for one method or several
side by side (diffusion methods edit the faces as images with ``--model``, e.g. ``faces64``).

For each of N seeded drags (face seed i; a distinctive handle in the central face region; a random direction; a
length drawn from ``--length``, 4–12 px by default) every method edits the same face, and is measured with
LPIPS-AlexNet features (never the method's own tracker):

- MD before (source vs source: ≈ the drag length) and after (source vs edited), DragBench's definition;
- LPIPS-alex between source and edited outside the mask (``--mask-radius``) or outside discs around the points;
  and always outside those discs ("off the points"): the damage inside the mask too, which a composite over the
  mask (``composite=mask``) cannot hide;
- the tracking error: how far the method's final tracked handle is from where the matcher finds the content;
- "handle kept": the cosine similarity of the same features at the handle's own pixel, source vs edited. A move
  changes the handle's place (what lay behind comes in), so it drops; a copy — the content appears at the target
  and also stays at the handle — keeps it near 1, and MD alone cannot tell the two apart;
- realism inside the edited region (the mask, or 8 px around the drag without one):
  :class:`dragkit.bench.metrics.PatchRealism` with DCGAN reference faces — how far the edit's local patches are from
  the nearest real patch (the source's, within the drag's reach, or a real face's at about the same place; 0 = as
  real as the source, lower is better) and whether the edit is flagged as torn (``docs/realism.md``).

Handles are drawn on distinctive features (``--handles distinctive``, the default: the most distinctive of 40 random
points of the central face region) or at random (``--handles random``: the first of those points, a flat cheek as
likely as an eye), as users drag both.

A method is ``NAME`` or ``NAME:k=v,k=v`` (its own overrides, on top of ``--set`` which applies to all)::

    python scripts/gan_drag_eval.py -n 20 -o docs/gan_drags
    python scripts/gan_drag_eval.py -n 20 --length 15 25 --mask-radius 8 -o docs/stabledrag/gan_long \\
        --method draggan --method stabledrag-gan --method stabledrag-gan:tau=0

One method writes ``results.json``, ``results.md`` and ``grid.png`` (before | after with points) into the output
folder; several write ``results.json``/``results.md`` per method into subfolders plus ``compare.md`` and
``compare.json`` (the side-by-side table) and ``compare.png`` (per drag: the source, then each method's edit, its MD
and realism under it). Both figures show the worst-scored edits first: the drags ordered by the least real edit of
them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from dragkit import DragGANPipeline, DragRequest
from dragkit.bench.gan_sets import HANDLES, random_drag
from dragkit.bench.metrics import AlexFeatures, PatchRealism, lpips_distance, mean_distance, reference_faces
from dragkit.core.geometry import drag_region
from dragkit.core.params import parse_assignment, parse_method_spec
from dragkit.methods import get_method
from dragkit.utils.viz import draw_points, side_by_side

LOST_PX = 5.0  # MD after more than this far above MD before: the content was destroyed rather than moved


def outside_discs(size: int, points: list[tuple[float, float]], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    keep = np.ones((size, size), bool)
    for x, y in points:
        keep &= (xx - x) ** 2 + (yy - y) ** 2 > radius**2
    return keep.astype(np.float32)


def judge(meter: PatchRealism, source: Image.Image, edited: Image.Image, region: np.ndarray, h, t) -> dict[str, Any]:
    """The realism columns of one edit: its score inside the region and whether it is flagged as torn."""
    score = meter(source, edited, region, [h], [t])
    return {"realism": round(score.distance, 4), "realism_mean": round(score.mean, 4), "torn": score.torn}


def slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec)


def handle_kept(source: torch.Tensor, edited: torch.Tensor, handle: tuple[float, float]) -> float:
    """Cosine similarity of the source's and the edited image's features at the handle's pixel."""
    x, y = round(handle[0]), round(handle[1])
    return float(torch.nn.functional.cosine_similarity(source[:, y, x], edited[:, y, x], dim=0))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    med = lambda k: round(float(np.median([r[k] for r in rows])), 2)  # noqa: E731
    mean = lambda k: round(float(np.mean([r[k] for r in rows])), 4)  # noqa: E731
    return {
        "n": len(rows),
        "length": mean("length"),
        "median_md_before": med("md_before"),
        "median_md_after": med("md_after"),
        "mean_md_after": round(mean("md_after"), 2),
        "improved": sum(r["md_after"] < r["md_before"] for r in rows),
        "lost": sum(r["md_after"] > r["md_before"] + LOST_PX for r in rows),
        "lpips_outside": mean("lpips_outside"),
        "lpips_off_points": mean("lpips_off_points") if "lpips_off_points" in rows[0] else None,
        "median_track_error": med("track_error"),
        "median_handle_kept": med("handle_kept"),
        "median_realism": round(float(np.median([r["realism"] for r in rows])), 4) if "realism" in rows[0] else None,
        "mean_realism": mean("realism") if "realism" in rows[0] else None,
        "torn": sum(r["torn"] for r in rows) if "torn" in rows[0] else None,
        "drag_back": mean("drag_back") if "drag_back" in rows[0] else None,
        "steps": round(mean("steps"), 1),
        "seconds": round(mean("seconds"), 2),
        "gated_fraction": (
            round(float(np.mean([r["gated_fraction"] for r in rows])), 3) if "gated_fraction" in rows[0] else None
        ),
    }


def write_method(out: Path, spec: str, params: dict, rows: list[dict], tiles: list, meta: dict) -> dict:
    summary = summarize(rows)
    out.mkdir(parents=True, exist_ok=True)
    data = {"method": spec, "params": params, **meta, "rows": rows, "summary": summary}
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "| seed | drag (px) | MD before | MD after | realism | torn | LPIPS outside | LPIPS whole | track error "
        "| steps |",
        "|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['length']:.1f} | {r['md_before']:.2f} | {r['md_after']:.2f} | {r['realism']:.4f} | "
            f"{'✗' if r['torn'] else ''} | {r['lpips_outside']:.4f} | {r['lpips_all']:.4f} | {r['track_error']:.1f} | "
            f"{r['steps']} |"
        )
    lines.append(
        f"\nmedian MD {summary['median_md_before']:.2f} → {summary['median_md_after']:.2f} px; lower after the "
        f"edit on {summary['improved']} of {summary['n']} drags, content lost (MD up > {LOST_PX:g} px) on "
        f"{summary['lost']}; median realism {summary['median_realism']:.4f}, {summary['torn']} flagged as torn; "
        f"mean LPIPS outside {summary['lpips_outside']:.4f}"
    )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if tiles:
        cols = 4
        rows_img = [side_by_side(tiles[k : k + cols], gap=12) for k in range(0, len(tiles), cols)]
        grid = Image.new("RGB", (max(r.width for r in rows_img), sum(r.height + 12 for r in rows_img)), "white")
        y = 0
        for r in rows_img:
            grid.paste(r, (0, y))
            y += r.height + 12
        grid.save(out / "grid.png")
    return summary


def compare_table(summaries: dict[str, dict]) -> str:
    lines = [
        "| method | MD before (median) | MD after (median) | MD after (mean) | improved | lost | realism (median) | "
        "torn | LPIPS outside | LPIPS off the points | handle kept (median) | track error (median) | "
        "confidence < τ (steps) | s / edit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for spec, s in summaries.items():
        gated = "–" if s["gated_fraction"] is None else f"{100 * s['gated_fraction']:.0f}%"
        off = "–" if s.get("lpips_off_points") is None else f"{s['lpips_off_points']:.4f}"
        lines.append(
            f"| `{spec}` | {s['median_md_before']:.2f} | {s['median_md_after']:.2f} | {s['mean_md_after']:.2f} | "
            f"{s['improved']}/{s['n']} | {s['lost']} | {s['median_realism']:.4f} | {s['torn']}/{s['n']} | "
            f"{s['lpips_outside']:.4f} | {off} | {s['median_handle_kept']:.2f} | {s['median_track_error']:.1f} | "
            f"{gated} | {s['seconds']:.1f} |"
        )
    back = {spec: s["drag_back"] for spec, s in summaries.items() if s.get("drag_back") is not None}
    if back:
        values = ", ".join(f"`{spec}` {v:.4f}" for spec, v in back.items())
        lines.append(f"\nDrag-Back (LPIPS inside the region between the source and the result dragged back): {values}")
    return "\n".join(lines) + "\n"


def worst_first(rows: dict[str, list], limit: int) -> list[int]:
    """The drags to show, worst first: ordered by the least real edit any method made of them (its realism score),
    at most ``limit``."""
    n = len(next(iter(rows.values())))
    worst = [max(r[i]["realism"] for r in rows.values()) for i in range(n)]
    return sorted(range(n), key=lambda i: -worst[i])[:limit]


def compare_grid(
    befores: list[Image.Image], afters: dict[str, list[Image.Image]], rows: dict[str, list], order: list[int]
) -> Image.Image:
    """One row per drag in ``order``: the source with its points, then each method's edit, under it its MD after,
    its realism score and ✗ when it is flagged as torn."""
    size, gap, label = befores[0].width, 6, 14
    cols = 1 + len(afters)
    grid = Image.new("RGB", (cols * (size + gap), label + len(order) * (size + label + gap)), "white")
    d = ImageDraw.Draw(grid)
    for c, name in enumerate(["source", *afters]):
        d.text((c * (size + gap) + 2, 1), name[: size // 6], fill="black")
    for r, i in enumerate(order):
        y = label + r * (size + label + gap)
        grid.paste(befores[i], (0, y))
        drag = next(iter(rows.values()))[i]  # every method edited the same drags
        d.text((2, y + size + 1), f"seed {drag['seed']}, MD {drag['md_before']:.1f}", fill="black")
        for c, (spec, ims) in enumerate(afters.items(), start=1):
            grid.paste(ims[i], (c * (size + gap), y))
            row = rows[spec][i]
            text = f"MD {row['md_after']:.1f} R {row['realism']:.3f}" + (" torn" if row["torn"] else "")
            d.text((c * (size + gap) + 2, y + size + 1), text, fill="red" if row["torn"] else "black")
    return grid


class Kept:
    """An edit read back from ``--edits`` for ``--rescore``: its image and what the first run recorded of it (the
    tracked handle, the steps, the seconds), so that every column but the measures stays as it was."""

    def __init__(self, image: Image.Image, row: dict[str, Any]):
        self.image = image
        self.handles = [tuple(row["tracked_final"])]
        self.info = {"steps": row["steps"], "stop_reason": row["stop"]}
        self.trajectory: list[dict[str, Any]] = []
        self.params: dict[str, Any] = {}
        self.seconds = row["seconds"]

    @classmethod
    def read(cls, path: Path, face: Image.Image, h: Any, t: Any, row: dict[str, Any]) -> Kept:
        if not path.is_file():
            raise SystemExit(f"--rescore: {path} is missing; run the evaluation with --edits first")
        if tuple(row["handle"]) != tuple(h) or tuple(row["target"]) != tuple(t):
            raise SystemExit(f"--rescore: {path} was made for another drag; rerun the evaluation")
        return cls(Image.open(path).convert("RGB"), row)

    RECORDED = ("tracked_final", "steps", "stop", "seconds", "min_confidence", "gated_fraction", "drag_back")

    @staticmethod
    def rows(out: Path, spec: str, methods: int) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        """The first run's rows by seed and the parameters its edits used."""
        path = (out if methods == 1 else out / slug(spec)) / "results.json"
        if not path.is_file():
            raise SystemExit(f"--rescore: {path} is missing; run the evaluation first")
        data = json.loads(path.read_text())
        return {r["seed"]: r for r in data["rows"]}, data["params"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0, help="drags use face seeds first..first+n-1")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument(
        "--method", dest="methods", action="append", help="NAME or NAME:k=v,k=v; repeat to compare (default draggan)"
    )
    ap.add_argument("--model", default="faces64", help="the model a diffusion method runs on")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="k=v for every method")
    ap.add_argument("--length", nargs=2, type=float, default=(4.0, 12.0), metavar=("MIN", "MAX"))
    ap.add_argument("--radius", type=float, default=10.0, help="disc radius around handle and target for LPIPS")
    ap.add_argument(
        "--mask-radius",
        type=float,
        default=0.0,
        help="give every method the same mask: pixels within this distance of the drag's segment (0 = no mask); "
        "LPIPS 'outside' is then measured outside this mask",
    )
    ap.add_argument(
        "--handles",
        choices=HANDLES,
        default="distinctive",
        help="where handles are drawn: on the most distinctive point of 40 (default) or at random",
    )
    ap.add_argument(
        "--edits",
        type=Path,
        help="keep every edit's PNG in this folder (EDITS/METHOD/SEED.png); with --rescore, read them back from there",
    )
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="measure the edits kept in --edits again (same drags, no editing): for a changed measure",
    )
    ap.add_argument(
        "--drag-back",
        action="store_true",
        help="diffusion methods: also drag each result back (handle and target swapped, same mask) and report LPIPS "
        "between the source and that inside the region (DragLoRA's Drag-Back; doubles the time)",
    )
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--grid-rows", type=int, default=20, help="drags shown in a comparison's compare.png")
    args = ap.parse_args()
    if args.rescore and args.edits is None:
        ap.error("--rescore reads the edits kept by an earlier run: give their --edits folder")
    specs = args.methods or ["draggan"]
    common = dict(parse_assignment(s) for s in args.sets)
    runs = {}
    for spec in specs:
        name, own = parse_method_spec(spec)
        overrides = {**common, **own}
        runs[spec] = (name, overrides, get_method(name).resolve(overrides))  # bad names fail before any work;
        # replaced by the parameters the first edit used (a diffusion model's dragkit.json sits between the two)
    torch.manual_seed(0)
    pipe = DragGANPipeline.from_pretrained()  # the faces come from the DCGAN whatever method edits them
    editor = None
    if any(get_method(name).engine == "diffusion" for name, _, _ in runs.values()):
        from dragkit import DragDiffusionPipeline

        editor = DragDiffusionPipeline.from_pretrained(args.model)
        editor.set_progress_bar_config(disable=True)
    ex = AlexFeatures()
    realism = PatchRealism(reference_faces())
    earlier = {spec: Kept.rows(args.out, spec, len(specs)) for spec in specs} if args.rescore else {}
    for spec, (_, params) in earlier.items():
        runs[spec] = (runs[spec][0], runs[spec][1], params)  # the parameters the edits were made with
    rows: dict[str, list] = {s: [] for s in specs}
    befores: list[Image.Image] = []
    afters: dict[str, list[Image.Image]] = {s: [] for s in specs}
    for i in range(args.first_seed, args.first_seed + args.n):
        face = pipe.generate(i)
        f_src = ex(face.image)
        h, t = random_drag(i, f_src, length=tuple(args.length), handles=args.handles)
        mask = drag_region((64, 64), [(h, t)], args.mask_radius) if args.mask_radius else None
        region = mask if mask is not None else drag_region((64, 64), [(h, t)], 8)  # where realism is judged
        off_points = outside_discs(64, [h, t], args.radius)
        keep = (~mask).astype(np.float32) if mask is not None else off_points
        for spec, (name, overrides, params) in runs.items():
            req = DragRequest(face.image, [h], [t], mask=mask, seed=i)
            kept = None if args.edits is None else args.edits / slug(spec) / f"{i}.png"
            t0 = time.perf_counter()
            if args.rescore:
                res = Kept.read(kept, face.image, h, t, earlier[spec][0][i])
            elif get_method(name).engine == "gan":
                res = pipe(req, method=name, code=face.code, progress=False, **overrides)
            else:  # a diffusion method edits the face as an image (its PNG pixels), as a user's file
                res = editor(req, method=name, progress=False, **overrides)
            sec = res.seconds if args.rescore else time.perf_counter() - t0
            if kept is not None and not args.rescore:
                kept.parent.mkdir(parents=True, exist_ok=True)
                res.image.save(kept)
            before = mean_distance(face.image, face.image, [h], [t], ex).mean
            md = mean_distance(face.image, res.image, [h], [t], ex)
            row = dict(
                seed=i,
                handle=h,
                target=t,
                length=round(math.dist(h, t), 2),
                md_before=round(before, 2),
                md_after=round(md.mean, 2),
                lpips_outside=round(lpips_distance(face.image, res.image, weight=keep), 4),
                lpips_off_points=round(lpips_distance(face.image, res.image, weight=off_points), 4),
                lpips_all=round(lpips_distance(face.image, res.image), 4),
                tracked_final=res.handles[0],
                matched=md.matches[0],
                track_error=round(math.dist(res.handles[0], md.matches[0]), 2),
                handle_kept=round(handle_kept(f_src, ex(res.image), h), 3),
                **judge(realism, face.image, res.image, region, h, t),
                steps=res.info["steps"],
                stop=res.info["stop_reason"],
                seconds=round(sec, 2),
            )
            conf = [min(r["confidences"]) for r in res.trajectory if "confidences" in r]
            if conf:
                row["min_confidence"] = round(min(conf), 3)
            if conf and params["supervision"] == "confidence_gated":  # the share of steps the gate acted on
                row["gated_fraction"] = round(float(np.mean([c < params["tau"] for c in conf])), 3)
            if args.drag_back and get_method(name).engine == "diffusion" and not args.rescore:
                back_req = DragRequest(res.image, [t], [h], mask=mask, seed=i)
                back = editor(back_req, method=name, progress=False, **overrides)
                row["drag_back"] = round(lpips_distance(face.image, back.image, weight=region.astype(np.float32)), 4)
            if args.rescore:  # what the edit itself reported stays as the first run recorded it
                row = {**earlier[spec][0][i], **{k: v for k, v in row.items() if k not in Kept.RECORDED}}
            rows[spec].append(row)
            if not args.rescore:
                runs[spec] = (name, overrides, res.params)  # what the edit used: with the model's defaults for it
            print(json.dumps({"method": spec, **row}), flush=True)
            if not args.no_grid:
                afters[spec].append(draw_points(res.image, [h], [t], scale=3))
        if not args.no_grid:
            befores.append(draw_points(face.image, [h], [t], scale=3))
    meta = {
        "length_range": list(args.length),
        "radius": args.radius,
        "mask_radius": args.mask_radius,
        "model": args.model if editor is not None else "dcgan-faces",  # the editing model (the faces: dcgan-faces)
        "matcher": ex.name,
        "handles": args.handles,
        "realism": realism.name,
    }
    if len(specs) == 1:
        spec = specs[0]
        tiles = [side_by_side([befores[i], afters[spec][i]]) for i in worst_first(rows, len(befores))]  # worst first
        summary = write_method(args.out, spec, runs[spec][2], rows[spec], tiles, meta)
        print(compare_table({spec: summary}))
        return
    summaries = {
        spec: write_method(args.out / slug(spec), spec, runs[spec][2], rows[spec], [], meta) for spec in specs
    }
    if befores:
        compare_grid(befores, afters, rows, worst_first(rows, args.grid_rows)).save(args.out / "compare.png")
    table = compare_table(summaries)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps({**meta, "methods": summaries}, indent=2) + "\n")
    seeds = f"face seeds {args.first_seed}–{args.first_seed + args.n - 1}"
    head = f"{args.n} drags ({seeds}, {args.handles} handles), length {args.length[0]:g}–{args.length[1]:g} px"
    head += f", mask radius {args.mask_radius:g} px" if args.mask_radius else f", LPIPS outside {args.radius:g} px"
    (args.out / "compare.md").write_text(f"{head}\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
