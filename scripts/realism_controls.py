"""The realism measure's controls: does a candidate measure score the source as the source, leave a small global
brightness change or shift alone, and score a tear, a smear and a pasted duplicate clearly worse?

Faces: DCGAN faces (the images faces64 was trained on and the GAN edits), one short (4–12 px) and one long
(15–25 px) drag each, the handle drawn on a distinctive feature and at random (``scripts/gan_drag_eval.py``'s
drags), the region an 8-px mask around the drag; one more benign control, the face as faces64 re-renders it
(inverted to t = 681 and sampled back with mutual self-attention: ``dragdiffusion`` with a handle on its target).
Photos: the first drag of DragBench samples, the region their own mask (or 8 px around the drag, scaled).

Candidates, each with its own threshold at the highest benign score (so no benign control is flagged):

- ``patch (source + faces)``: :class:`dragkit.bench.metrics.PatchRealism` with the reference faces (faces only);
- ``patch (source)``: the same judged by the source alone (what photos get);
- ``patch (faces)``: the reference faces alone (a population prior, no source);
- ``IF_s2t``: DragFlow's, as LPIPS between the source's patch at the handle and the edit's at the target;
- ``LPIPS in region``: LPIPS-alex between source and edit averaged inside the region (full reference, same place).

    python scripts/realism_controls.py -n 20 -o docs/realism --photos 20
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from gan_drag_eval import random_drag

from dragkit import DragGANPipeline, DragRequest
from dragkit.bench.controls import BENIGN, DAMAGE, DEGRADED
from dragkit.bench.metrics import (
    TORN_THRESHOLD,
    AlexFeatures,
    PatchRealism,
    if_s2t,
    lpips_distance,
    reference_faces,
)
from dragkit.core.geometry import drag_region
from dragkit.utils.viz import draw_points, side_by_side, stack

OBSERVED = ("faces64 re-render, no LoRA", *DEGRADED)  # scored and shown, neither benign nor damage
CANDIDATES = ("patch (source + faces)", "patch (source)", "patch (faces)", "IF_s2t", "LPIPS in region")


def score_all(meters: dict[str, Any], source: Image.Image, edited: Image.Image, region, h, t) -> dict[str, float]:
    out = {name: round(meter(source, edited, region, [h], [t]).distance, 5) for name, meter in meters.items()}
    out["IF_s2t"] = round(if_s2t(source, edited, [h], [t], radius=8 * max(source.size) / 64), 5)
    out["LPIPS in region"] = round(lpips_distance(source, edited, weight=region.astype(np.float32)), 5)
    return out


def face_cases(n: int, first: int) -> list[dict[str, Any]]:
    gan = DragGANPipeline.from_pretrained()
    ex = AlexFeatures()
    cases = []
    for i in range(first, first + n):
        face = gan.generate(i).image
        f = ex(face)
        for handles, length in (("distinctive", (4.0, 12.0)), ("random", (15.0, 25.0))):
            h, t = random_drag(i, f, length=length, handles=handles)
            region = drag_region((64, 64), [(h, t)], 8)
            cases.append(dict(kind="face", id=f"seed {i}, {handles}, {math.dist(h, t):.0f} px", image=face, h=h, t=t,
                              region=region))  # fmt: skip
        for handles, length in (("random", (4.0, 12.0)), ("distinctive", (15.0, 25.0))):
            h, t = random_drag(i, f, length=length, handles=handles)
            cases.append(dict(kind="face", id=f"seed {i}, {handles}, {math.dist(h, t):.0f} px", image=face, h=h, t=t,
                              region=drag_region((64, 64), [(h, t)], 8)))  # fmt: skip
    return cases


def photo_cases(dataset: Path, n: int) -> list[dict[str, Any]]:
    from dragkit.bench.datasets import read_dragbench

    samples = read_dragbench(dataset)
    by_cat: dict[str, list] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    chosen = []
    while len(chosen) < n and any(by_cat.values()):
        for cat in sorted(by_cat):
            if by_cat[cat] and len(chosen) < n:
                chosen.append(by_cat[cat].pop(0))
    cases = []
    for s in chosen:
        im = s.image()
        h, t = s.handles[0], s.targets[0]
        region = (
            s.mask
            if s.mask is not None and s.mask.any()
            else drag_region(im.size[::-1], [(h, t)], 8 * max(im.size) / 64)
        )
        cases.append(dict(kind="photo", id=s.id, image=im, h=h, t=t, region=np.asarray(region, bool)))
    return cases


RERENDERS = {"faces64 re-render": "train", "faces64 re-render, no LoRA": "none"}


def rerender(cases: list[dict[str, Any]], cache: Path | None) -> None:
    """faces64's re-rendering of each face: inverted to t = 681 and sampled back with mutual self-attention, nothing
    moved (``dragdiffusion`` with its handle on its target), with its identity LoRA (a benign control: what every
    diffusion edit does to what it does not move) and without it (an observation: without the LoRA faces64 redraws
    some faces visibly, so it is no control)."""
    from dragkit import DragDiffusionPipeline

    pipe = DragDiffusionPipeline.from_pretrained("faces64")
    pipe.set_progress_bar_config(disable=True)
    for name, lora in RERENDERS.items():
        done: dict[int, Image.Image] = {}
        for c in cases:
            key = id(c["image"])
            path = None if cache is None else cache / lora / f"{c['id'].split(',')[0].replace(' ', '_')}.png"
            if key not in done and path is not None and path.is_file():
                done[key] = Image.open(path).convert("RGB")
            if key not in done:
                req = DragRequest(c["image"], [c["h"]], [c["h"]], seed=0)
                done[key] = pipe(req, method="dragdiffusion", progress=False, lora=lora).image
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    done[key].save(path)
            c[name] = done[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="faces (4 drags each)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--photos", type=int, default=20, help="DragBench samples (0: none)")
    ap.add_argument("--dragbench", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dragbench")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--rerender-cache", type=Path, help="keep faces64's re-renderings here for a later run")
    args = ap.parse_args()
    refs = reference_faces()
    meters_face = {
        "patch (source + faces)": PatchRealism(refs),
        "patch (source)": PatchRealism(),
        "patch (faces)": PatchRealism(refs, use_source=False),
    }
    meters_photo = {"patch (source)": PatchRealism()}
    cases = face_cases(args.n, args.first_seed)
    rerender(cases, args.rerender_cache)
    if args.photos:
        cases += photo_cases(args.dragbench, args.photos)
    rows = []
    tiles = []
    for k, c in enumerate(cases):
        controls = {**{name: f(c["image"], c["h"], c["t"]) for name, f in BENIGN.items()}}
        controls.update({name: c[name] for name in RERENDERS if name in c})
        controls.update({name: f(c["image"], c["h"], c["t"]) for name, f in DEGRADED.items()})
        controls.update({name: f(c["image"], c["h"], c["t"]) for name, f in DAMAGE.items()})
        meters = meters_face if c["kind"] == "face" else meters_photo
        for name, im in controls.items():
            row = dict(kind=c["kind"], case=c["id"], control=name, damage=name in DAMAGE, observed=name in OBSERVED)
            row.update(score_all(meters, c["image"], im, c["region"], c["h"], c["t"]))
            rows.append(row)
        if c["kind"] == "face" and len(tiles) < 8:
            scale = 3
            ims = [draw_points(c["image"], [c["h"]], [c["t"]], scale=scale)]
            for name, im in controls.items():
                big = im.resize((64 * scale, 64 * scale), Image.NEAREST)
                r = next(x for x in rows if x["case"] == c["id"] and x["control"] == name)
                d = ImageDraw.Draw(big)
                d.rectangle((0, 0, 64 * scale, 12), fill="white")
                d.text((2, 0), f"{name}: {r['patch (source + faces)']:.3f}", fill="black")
                ims.append(big)
            tiles.append(side_by_side(ims))
        print(json.dumps({"case": c["id"], "done": k + 1, "of": len(cases)}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    (args.out / "controls.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    (args.out / "controls.md").write_text(markdown(summary))
    if tiles:
        stack(tiles).save(args.out / "controls.png")
    print(markdown(summary))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in rows}):
        mine = [r for r in rows if r["kind"] == kind]
        names = [c for c in CANDIDATES if c in mine[0]]
        controls = list(dict.fromkeys(r["control"] for r in mine))
        per: dict[str, Any] = {}
        for cand in names:
            benign = [r[cand] for r in mine if not r["damage"] and not r["observed"]]
            threshold = max(benign)
            # IF_s2t is high for the unedited source (nothing moved): flag on the high side like the others
            entry = {"threshold (max benign)": threshold}
            for ctl in controls:
                vals = [r[cand] for r in mine if r["control"] == ctl]
                entry[ctl] = {
                    "median": round(statistics.median(vals), 5),
                    "p90": round(float(np.quantile(vals, 0.9)), 5),
                    "flagged at the chosen threshold": round(
                        float(
                            np.mean(
                                [v > (TORN_THRESHOLD if cand.startswith("patch (source") else threshold) for v in vals]
                            )
                        ),
                        3,
                    ),
                    "above max benign": round(float(np.mean([v > threshold for v in vals])), 3),
                }
            damage = [r[cand] for r in mine if r["damage"]]
            entry["auc (damage vs benign)"] = round(
                float(
                    np.mean([[d > b for b in benign] for d in damage])
                    + 0.5 * np.mean([[d == b for b in benign] for d in damage])
                ),
                3,
            )
            per[cand] = entry
        out[kind] = {"cases": len({r["case"] for r in mine}), "controls": controls, "candidates": per}
    return out


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for kind, s in summary.items():
        lines += [f"## {kind}s: {s['cases']} drags", ""]
        head = "| candidate | " + " | ".join(s["controls"]) + " | AUC damage vs benign |"
        lines += [head, "|---|" + "---:|" * (len(s["controls"]) + 1)]
        for cand, e in s["candidates"].items():
            cells = [f"{e[c]['median']:.4f} ({100 * e[c]['above max benign']:.0f}%)" for c in s["controls"]]
            lines.append(f"| {cand} | " + " | ".join(cells) + f" | {e['auc (damage vs benign)']:.3f} |")
        lines += [
            "",
            "Each cell: the median score, and in brackets the share of drags scored above every benign control "
            "of this set (the candidate's own threshold).",
            "",
        ]
        for cand, e in s["candidates"].items():
            if cand.startswith("patch (source"):
                flagged = ", ".join(f"{c} {100 * e[c]['flagged at the chosen threshold']:.0f}%" for c in s["controls"])
                lines.append(f"- `{cand}` flagged as torn at the chosen threshold {TORN_THRESHOLD:g}: {flagged}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
