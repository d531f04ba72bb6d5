"""Real-weights evidence: seeded random drags on generated faces, judged independently (any method; diffusion
methods edit the faces as images with ``--model``, e.g. ``faces64``).

For each of N seeded drags (face seed i; a handle in the central face region; a random direction; a length of
4–12 px) it runs a method on the bundled DCGAN with the exact generated code (no inversion), then measures with
LPIPS-AlexNet features (never the method's own tracker):

- MD before (source vs source: ≈ the drag length) and after (source vs edited), DragBench's definition;
- LPIPS-alex between source and edited outside discs of radius R around the handle and the target.

Usage::

    python scripts/gan_drag_eval.py -n 20 -o docs/gan_drags [--first-seed 0] [--set latent_block=1 ...]

Writes ``results.json``, ``results.md`` and ``grid.png`` (before | after with points, one row per drag).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from dragkit import DragGANPipeline, DragRequest
from dragkit.geometry import drag_region
from dragkit.methods import get_method
from dragkit.metrics import AlexFeatures, lpips_distance, mean_distance
from dragkit.params import parse_assignment
from dragkit.viz import draw_points, side_by_side


def distinctive_handle(feat: torch.Tensor, rng: np.random.Generator, candidates: int = 40) -> np.ndarray:
    """The most distinctive of ``candidates`` random points of the central face region: the one whose feature's
    best cosine match farther than 4 px away is weakest. A handle on a flat cheek has look-alikes everywhere and
    no matcher (ours or the official DIFT one) can tell where it went; DragBench's handles sit on parts too."""
    c, h, w = feat.shape
    f = torch.nn.functional.normalize(feat.reshape(c, -1), dim=0)
    yy, xx = np.mgrid[:h, :w]
    best, best_score = None, 2.0
    for _ in range(candidates):
        p = rng.integers(20, 45, 2)
        sim = (f[:, p[1] * w + p[0]] @ f).reshape(h, w).numpy()
        far = (xx - p[0]) ** 2 + (yy - p[1]) ** 2 > 16
        score = float(sim[far].max())
        if score < best_score:
            best, best_score = p, score
    assert best is not None
    return best.astype(float)


def random_drag(i: int, feat: torch.Tensor, size: int = 64) -> tuple[tuple[float, float], tuple[float, float]]:
    rng = np.random.default_rng(1000 + i)
    h = distinctive_handle(feat, rng)
    while True:
        ang = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(4, 12)
        t = np.round(h + length * np.array([math.cos(ang), math.sin(ang)]))
        if (t >= 4).all() and (t <= size - 5).all() and np.linalg.norm(t - h) >= 4:
            return (float(h[0]), float(h[1])), (float(t[0]), float(t[1]))


def outside_discs(size: int, points: list[tuple[float, float]], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    keep = np.ones((size, size), bool)
    for x, y in points:
        keep &= (xx - x) ** 2 + (yy - y) ** 2 > radius**2
    return keep.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0, help="drags use face seeds first..first+n-1")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--method", default="draggan")
    ap.add_argument("--model", default="faces64", help="the model a diffusion method runs on")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--radius", type=float, default=10.0, help="disc radius around handle and target for LPIPS")
    ap.add_argument(
        "--mask-radius",
        type=float,
        default=0.0,
        help="give every method the same mask: pixels within this distance of the drag's segment (0 = no mask); "
        "LPIPS 'outside' is then measured outside this mask",
    )
    ap.add_argument("--no-grid", action="store_true")
    args = ap.parse_args()
    overrides = dict(parse_assignment(s) for s in args.sets)
    torch.manual_seed(0)
    pipe = DragGANPipeline.from_pretrained()  # the faces come from the DCGAN whatever method edits them
    editor = None
    if get_method(args.method).engine == "diffusion":
        from dragkit import DragDiffusionPipeline

        editor = DragDiffusionPipeline.from_pretrained(args.model)
        editor.set_progress_bar_config(disable=True)
    ex = AlexFeatures()
    rows, tiles = [], []
    for i in range(args.first_seed, args.first_seed + args.n):
        face = pipe.generate(i)
        h, t = random_drag(i, ex(face.image))
        mask = drag_region((64, 64), [(h, t)], args.mask_radius) if args.mask_radius else None
        req = DragRequest(face.image, [h], [t], mask=mask, seed=i)
        t0 = time.perf_counter()
        if editor is None:
            res = pipe(req, method=args.method, code=face.code, progress=False, **overrides)
        else:  # a diffusion method edits the face as an image (its PNG pixels), as a user's file
            res = editor(req, method=args.method, progress=False, **overrides)
        sec = time.perf_counter() - t0
        before = mean_distance(face.image, face.image, [h], [t], ex).mean
        after = mean_distance(face.image, res.image, [h], [t], ex).mean
        keep = (~mask).astype(np.float32) if mask is not None else outside_discs(64, [h, t], args.radius)
        lp_out = lpips_distance(face.image, res.image, weight=keep)
        lp_all = lpips_distance(face.image, res.image)
        rows.append(
            dict(
                seed=i,
                handle=h,
                target=t,
                length=round(math.dist(h, t), 2),
                md_before=round(before, 2),
                md_after=round(after, 2),
                lpips_outside=round(lp_out, 4),
                lpips_all=round(lp_all, 4),
                tracked_final=res.handles[0],
                steps=res.info["steps"],
                stop=res.info["stop_reason"],
                seconds=round(sec, 2),
            )
        )
        print(json.dumps(rows[-1]))
        if not args.no_grid:
            tiles.append(
                side_by_side([draw_points(face.image, [h], [t], scale=3), draw_points(res.image, [h], [t], scale=3)])
            )
    mean = {
        k: round(float(np.mean([r[k] for r in rows])), 4)
        for k in ("length", "md_before", "md_after", "lpips_outside", "lpips_all", "steps", "seconds")
    }
    args.out.mkdir(parents=True, exist_ok=True)
    params = get_method(args.method).resolve(overrides)
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "method": args.method,
                "params": params,
                "radius": args.radius,
                "mask_radius": args.mask_radius,
                "matcher": ex.name,
                "rows": rows,
                "mean": mean,
            },
            indent=2,
        )
    )
    lines = [
        "| seed | drag (px) | MD before | MD after | LPIPS outside | LPIPS whole | steps |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['length']:.1f} | {r['md_before']:.2f} | {r['md_after']:.2f} | "
            f"{r['lpips_outside']:.4f} | {r['lpips_all']:.4f} | {r['steps']} |"
        )
    lines.append(
        f"| **mean** | {mean['length']:.1f} | {mean['md_before']:.2f} | {mean['md_after']:.2f} | "
        f"{mean['lpips_outside']:.4f} | {mean['lpips_all']:.4f} | {mean['steps']:.0f} |"
    )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    if tiles:
        cols = 4
        rows_img = [side_by_side(tiles[k : k + cols], gap=12) for k in range(0, len(tiles), cols)]
        w = max(r.width for r in rows_img)
        from PIL import Image

        grid = Image.new("RGB", (w, sum(r.height + 12 for r in rows_img)), (255, 255, 255))
        y = 0
        for r in rows_img:
            grid.paste(r, (0, y))
            y += r.height + 12
        grid.save(args.out / "grid.png")
    summary = {
        "median_md_before": float(np.median([r["md_before"] for r in rows])),
        "median_md_after": float(np.median([r["md_after"] for r in rows])),
        "improved": sum(r["md_after"] < r["md_before"] for r in rows),
        "n": len(rows),
    }
    data = json.loads((args.out / "results.json").read_text())
    data["summary"] = summary
    (args.out / "results.json").write_text(json.dumps(data, indent=2))
    with open(args.out / "results.md", "a") as f:
        f.write(
            f"\nmedian MD {summary['median_md_before']:.2f} → {summary['median_md_after']:.2f} px; "
            f"MD lower after the edit on {summary['improved']} of {summary['n']} drags\n"
        )
    print("mean", json.dumps(mean), json.dumps(summary))


if __name__ == "__main__":
    main()
