"""Stage profile of one DragDiffusion edit of a DragBench sample at 512 wide, with every dragdiffusion default,
on an SD 1.5-shaped pipeline of reduced width and random weights (no SD weights exist offline).

Usage::

    python scripts/profile_dragdiffusion.py [--width 64] [--sample land_scape/PJC_2023-09-15-1603-42]
        [--device cpu] [--dtype float32] [--set drag_steps=80 ...] [--json out.json]

Prints the per-stage table (wall time and peak memory) that ``dragkit edit --profile`` prints.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from PIL import Image

from dragkit import DragDiffusionPipeline, DragRequest
from dragkit.core.params import parse_assignment
from dragkit.utils.io import safe_unpickle
from dragkit.utils.profiler import format_profile
from dragkit.utils.testing import build_sd15_shaped

DRAGBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dragbench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="channels of the first UNet block (SD 1.5: 320)")
    ap.add_argument("--sample", default="land_scape/PJC_2023-09-15-1603-42")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    overrides = dict(parse_assignment(s) for s in args.sets)
    folder = DRAGBENCH / args.sample
    meta = safe_unpickle(folder / "meta_data.pkl")
    pts = meta["points"]
    req = DragRequest(
        Image.open(folder / "original_image.png").convert("RGB"),
        [tuple(p) for p in pts[0::2]],
        [tuple(p) for p in pts[1::2]],
        mask=meta["mask"],
        prompt=meta["prompt"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = build_sd15_shaped(Path(tmp) / "sd15", width=args.width)
        pipe = DragDiffusionPipeline.from_pretrained(model, dtype=getattr(torch, args.dtype)).to(args.device)
        n = sum(p.numel() for p in pipe.unet.parameters())
        import os

        os.environ.setdefault("DRAGKIT_CACHE", str(Path(tmp) / "cache"))
        out = pipe(req, **overrides)
    print(
        f"sample {args.sample} {req.size[0]}x{req.size[1]}, UNet {n / 1e6:.1f} M parameters (SD 1.5: 859.5 M), "
        f"{args.device} {args.dtype}, torch threads {torch.get_num_threads()}"
    )
    print(f"steps {out.info['steps']} ({out.info['stop_reason']}), lora {out.info['lora']}")
    print(format_profile(out.info["profile"]))
    if args.json:
        args.json.write_text(json.dumps({"info": out.info, "params": out.params, "unet_parameters": n}, indent=2))


if __name__ == "__main__":
    main()
