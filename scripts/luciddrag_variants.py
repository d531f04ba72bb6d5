"""LucidDrag's several results on faces64 (unconditional: every extra result is a seed variant): for N seeded drags,
``num_results=3``, and for each result MD (LPIPS-alex matcher) and LPIPS outside 10-px discs, plus how far the two
variants are from each other (LPIPS, whole image). Writes ``rows.json`` and ``variants.png`` (source, then the
results, per drag)::

    python scripts/luciddrag_variants.py -n 8 -o docs/luciddrag/variants
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from dragkit import DragGANPipeline, DragRequest, LucidDragPipeline
from dragkit.bench.metrics import AlexFeatures, lpips_distance, mean_distance
from dragkit.utils.viz import draw_points, side_by_side, stack

spec = importlib.util.spec_from_file_location("gan_drag_eval", Path(__file__).with_name("gan_drag_eval.py"))
ev = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ev)  # the same seeded drags as the other faces64 measurements


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--set", dest="sets", action="append", default=["guide_quality=0"], help="k=v for luciddrag")
    args = ap.parse_args()
    from dragkit.core.params import parse_assignment

    overrides = dict(parse_assignment(s) for s in args.sets)
    gan = DragGANPipeline.from_pretrained()
    pipe = LucidDragPipeline.from_pretrained("faces64")
    pipe.set_progress_bar_config(disable=True)
    ex = AlexFeatures()
    rows, tiles = [], []
    for i in range(args.n):
        face = gan.generate(i)
        h, t = ev.random_drag(i, ex(face.image), length=(4.0, 12.0))
        req = DragRequest(face.image, [h], [t], seed=i)
        res = pipe(req, progress=False, num_results=3, **overrides)
        keep = ev.outside_discs(64, [h, t], 10)
        row = {"seed": i, "md_before": round(mean_distance(face.image, face.image, [h], [t], ex).mean, 2)}
        row["md"] = [round(mean_distance(face.image, x.image, [h], [t], ex).mean, 2) for x in res]
        row["lpips_outside"] = [round(lpips_distance(face.image, x.image, weight=keep), 4) for x in res]
        row["pairwise_lpips"] = round(lpips_distance(res[1].image, res[2].image), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
        tiles.append(
            side_by_side([draw_points(im, [h], [t], scale=3) for im in [face.image, *(x.image for x in res)]])
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps({"overrides": overrides, "rows": rows}, indent=1) + "\n")
    stack(tiles, gap=6).save(args.out / "variants.png")


if __name__ == "__main__":
    main()
