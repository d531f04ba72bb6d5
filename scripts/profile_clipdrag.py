"""What CLIPDrag's CLIP term costs per drag step: the same edit with and without an edit prompt, side by side.

A DragBench sample at 512 wide on an SD 1.5-shaped pipeline of reduced UNet width (the VAE at full SD layout, so
the x0-prediction's decode costs what it costs) and a random CLIP of ViT-B/16's shape (no SD or CLIP weights
exist offline); the `clipdrag` preset without LoRA, a fixed number of drag steps (no early stop). Prints the
drag stage's seconds per step and peak memory for both runs and their ratio::

    python scripts/profile_clipdrag.py [--width 64] [--steps 8] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image

from dragkit import DragDiffusionPipeline, DragRequest
from dragkit.utils.io import safe_unpickle
from dragkit.utils.testing import build_clip_b16_shaped, build_sd15_shaped

DRAGBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dragbench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="channels of the first UNet block (SD 1.5: 320)")
    ap.add_argument("--sample", default="land_scape/PJC_2023-09-15-1603-42")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--edit-prompt", default="a lake at sunset")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    folder = DRAGBENCH / args.sample
    meta = safe_unpickle(folder / "meta_data.pkl")
    pts = meta["points"]
    image = Image.open(folder / "original_image.png").convert("RGB")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DRAGKIT_CACHE", str(Path(tmp) / "cache"))
        model = build_sd15_shaped(Path(tmp) / "sd15", width=args.width)
        clip = build_clip_b16_shaped(Path(tmp) / "clip")
        pipe = DragDiffusionPipeline.from_pretrained(model).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        for label, edit in (("drag only", ""), ("drag + CLIP", args.edit_prompt)):
            req = DragRequest(
                image,
                [tuple(p) for p in pts[0::2]],
                [tuple(p) for p in pts[1::2]],
                mask=meta["mask"],
                prompt=meta["prompt"],
                edit_prompt=edit,
            )
            out = pipe(
                req,
                method="clipdrag",
                progress=False,
                lora="none",
                drag_steps=args.steps,
                stop_distance=0,
                clip_model=str(clip),
            )
            drag = out.info["profile"]["drag"]
            rows[label] = {
                "steps": out.info["steps"],
                "seconds_per_step": drag["seconds"] / max(out.info["steps"], 1),
                "peak_mib": drag.get("peak_bytes", 0) / 2**20,
                "profile": out.info["profile"],
            }
    a, b = rows["drag only"], rows["drag + CLIP"]
    print(f"{args.sample} at {image.size[0]}x{image.size[1]}, {args.device}, torch threads {torch.get_num_threads()}")
    print("| run | drag steps | s / step | drag peak memory |")
    print("|---|---:|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {r['steps']} | {r['seconds_per_step']:.2f} | {r['peak_mib']:,.0f} MiB |")
    print(
        f"CLIP term: +{b['seconds_per_step'] - a['seconds_per_step']:.2f} s per step "
        f"({b['seconds_per_step'] / a['seconds_per_step']:.2f}x), +{b['peak_mib'] - a['peak_mib']:,.0f} MiB peak"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
