"""PTI against today's GAN inversion on the bundled DCGAN: how well each refits a user's image, and how the drag
does on the refit.

Two sets of 64-px images, each read back from an 8-bit PNG as a user's file would be: ``faces`` (the DCGAN's own
faces, held-out seeds 2000+, with a seeded random drag) and ``photos`` (DragBench's photos of a category, resized
to 64 px, with their own drags scaled). Each image is edited with ``draggan`` twice, fitted by ``invert_method=latent``
(today's: z from 8 random starts, then the 256×8×8 code entering block 2) and by ``pti`` (the same z as the pivot, then
the generator tuned to the image). Per fit: PSNR and LPIPS-alex of the refit against the image, and seconds; per drag
(MD by the independent LPIPS-alex matcher on the refit image, as the drag's source): MD before and after, realism
inside the drag's region (:class:`~dragkit.bench.metrics.PatchRealism`), LPIPS outside 8-px discs around the points
against the refit and against the user's image (what the user sees changed).

Usage: ``python scripts/pti_eval.py -n 10 --photos human_head [--out docs/pti]``
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dragkit import DragGANPipeline, DragRequest
from dragkit.bench.datasets import open_dataset
from dragkit.bench.gan_sets import random_drag
from dragkit.bench.metrics import AlexFeatures, PatchRealism, lpips_distance, mean_distance, reference_faces
from dragkit.core.geometry import drag_region
from dragkit.core.params import parse_assignment

DRAGBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dragbench"
METHODS = ("latent", "pti")


def as_file(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return Image.open(buf).convert("RGB")


def outside_discs(size: int, points, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    keep = np.ones((size, size), bool)
    for x, y in points:
        keep &= (xx - x) ** 2 + (yy - y) ** 2 > radius**2
    return keep.astype(np.float32)


def cases(args, pipe, ex):
    """``(set, id, image, handle, target)`` for both sets."""
    for i in range(args.n):
        seed = args.first_seed + i
        face = as_file(pipe.generate(seed).image)
        h, t = random_drag(seed, ex(face), 64, (4, 12), "random")
        yield "faces", f"seed{seed}", face, h, t
    if args.photos:
        for s in open_dataset(DRAGBENCH, categories=[args.photos], limit=args.n):
            img = s.image()
            kx, ky = 64 / img.width, 64 / img.height
            small = as_file(img.resize((64, 64), Image.BICUBIC))
            (hx, hy), (tx, ty) = s.handles[0], s.targets[0]  # the first drag of each (one handle per edit)
            yield "photos", s.id, small, (hx * kx, hy * ky), (tx * kx, ty * ky)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="images per set")
    ap.add_argument("--first-seed", type=int, default=2000)
    ap.add_argument("--photos", default="human_head", help="a DragBench category ('' for none)")
    ap.add_argument("--set", action="append", default=[], help="NAME=VALUE for both fits")
    ap.add_argument("--out", type=Path, default=None, help="write rows.json and table.md here")
    args = ap.parse_args()
    typed = dict(parse_assignment(kv) for kv in args.set)
    pipe = DragGANPipeline.from_pretrained()
    ex = AlexFeatures()
    meters = {"faces": PatchRealism(reference_faces()), "photos": PatchRealism()}
    rows = []
    for kind, sid, image, h, t in cases(args, pipe, ex):
        off = outside_discs(64, [h, t], 8.0)
        region = drag_region((64, 64), [(h, t)], 8.0)
        for method in METHODS:
            req = DragRequest(image, [h], [t], seed=0)
            t0 = time.perf_counter()
            res = pipe(req, method="draggan", invert_method=method, record_frames=100_000, progress=False, **typed)
            secs = time.perf_counter() - t0
            refit = res.frames[0][1]  # the drag's step 0: the image as the (tuned) generator reproduces it
            row = dict(
                set=kind,
                id=sid,
                method=method,
                length=round(math.dist(h, t), 2),
                psnr=res.info["inversion_psnr"],
                lpips_refit=round(lpips_distance(image, refit), 4),
                md_before=round(mean_distance(refit, refit, [h], [t], ex).mean, 2),
                md_after=round(mean_distance(refit, res.image, [h], [t], ex).mean, 2),
                realism=round(meters[kind](refit, res.image, region, [h], [t]).distance, 4),
                lpips_outside_refit=round(lpips_distance(refit, res.image, weight=off), 4),
                lpips_outside_image=round(lpips_distance(image, res.image, weight=off), 4),
                inversion_steps=res.info["inversion_steps"],
                steps=res.info["steps"],
                seconds=round(secs, 1),
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = ["| set | fit | n | PSNR dB | LPIPS refit | MD before → after | realism | LPIPS out (refit / image) | s |",
             "|---|---|---:|---:|---:|---|---:|---|---:|"]  # fmt: skip
    for kind in ("faces", "photos"):
        for method in METHODS:
            rs = [r for r in rows if r["set"] == kind and r["method"] == method]
            if not rs:
                continue

            def med(k: str, rs: list = rs) -> float:
                return float(np.median([r[k] for r in rs]))

            table.append(
                f"| {kind} | {method} | {len(rs)} | {med('psnr'):.1f} | {med('lpips_refit'):.3f} | "
                f"{med('md_before'):.2f} → {med('md_after'):.2f} | {med('realism'):.4f} | "
                f"{med('lpips_outside_refit'):.4f} / {med('lpips_outside_image'):.4f} | {med('seconds'):.1f} |"
            )
    print("\n".join(table))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
        (args.out / "table.md").write_text("medians\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
