"""Pictures of AdaptiveDrag's automatic mask (``mask=auto``) on real faces, through the pipelines' own path.

For each of N seeded drags of the evaluation set (``gan_drag_eval.py``), one row: the face with the drag, then
for each model the superpixels of its features (boundaries) and the mask it allows to change (the rest dimmed).
No drag steps are taken; the mask is what an edit would use. Usage::

    python scripts/auto_mask_gallery.py -n 6 -o docs/adaptivedrag/auto_masks.png [--segments 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dragkit import DragGANPipeline, DragRequest
from dragkit.bench.metrics import AlexFeatures
from dragkit.parts.automask import feature_superpixels
from dragkit.utils.viz import draw_points

SCALE = 3


def boundaries(image: Image.Image, labels: np.ndarray) -> Image.Image:
    from skimage.segmentation import find_boundaries

    lab = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(image.size, Image.NEAREST))
    arr = np.asarray(image.convert("RGB")).copy()
    arr[find_boundaries(lab, mode="inner")] = (255, 220, 0)
    return Image.fromarray(arr)


def masked(image: Image.Image, mask: np.ndarray) -> Image.Image:
    arr = np.asarray(image.convert("RGB")).astype(np.float32)
    arr[~mask] *= 0.3
    return Image.fromarray(arr.astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=6)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--segments", type=int, default=200)
    ap.add_argument("--model", default="faces64", help="the diffusion model shown beside the GAN")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the evaluation set's drags
    from gan_drag_eval import random_drag

    from dragkit import DragDiffusionPipeline

    gan = DragGANPipeline.from_pretrained()
    diff = DragDiffusionPipeline.from_pretrained(args.model)
    diff.set_progress_bar_config(disable=True)
    ex = AlexFeatures()
    rows = []
    for i in range(args.n):
        face = gan.generate(i)
        h, t = random_drag(i, ex(face.image))
        req = DragRequest(face.image, [h], [t], seed=i)
        tiles = [draw_points(face.image, [h], [t])]
        runs = ((gan, dict(method="draggan", code=face.code)), (diff, dict(method="dragdiffusion", lora="none")))
        for pipe, own in runs:
            seen: list = []  # the loop's step-0 features are the ones the automatic mask was built from
            res = pipe(
                req,
                progress=False,
                mask="auto",
                drag_steps=0,
                auto_mask_segments=args.segments,
                callback=lambda ev, seen=seen: seen.append(ev["features"]),
                **own,
            )
            labels = feature_superpixels(seen[0], args.segments, res.params["auto_mask_compactness"])
            tiles += [boundaries(face.image, labels), masked(face.image, res.mask)]
        rows.append([im.resize((im.width * SCALE, im.height * SCALE), Image.NEAREST) for im in tiles])
    w, hgt, gap, top = rows[0][0].width, rows[0][0].height, 4, 14
    sheet = Image.new("RGB", (5 * (w + gap), top + len(rows) * (hgt + gap)), "white")
    d = ImageDraw.Draw(sheet)
    names = ["face + drag", "DCGAN superpixels", "DCGAN auto mask", f"{args.model} superpixels", f"{args.model} mask"]
    for c, name in enumerate(names):
        d.text((c * (w + gap) + 2, 1), name, fill="black")
    for r, tiles in enumerate(rows):
        for c, im in enumerate(tiles):
            sheet.paste(im, (c * (w + gap), top + r * (hgt + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
