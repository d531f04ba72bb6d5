"""An estimate of SDXL's memory per stage of a drag edit at 1024², from stage-by-stage CPU memory measured on
SDXL-shaped models with random weights at reduced width and size (``dragkit.utils.testing.build_sdxl_shaped``).

Each stage's own memory (peak resident set within the stage minus what was in use when it began, from the
profiler) is measured for a ``dragdiffusion`` edit at UNet widths ``--widths`` and working widths ``--sizes``, and
fitted per stage as ``a · width · pixels + b · pixels + c`` (activations grow with the channels and the pixels;
encoding and decoding, where SDXL's own VAE works at every width, as ``b · pixels + c``;
the LoRA's weights and the optimizer's state are in ``c``; the models' VAE is SDXL's own). A warm-up edit comes
first, so that first-use allocations are not counted in any stage. The fit is evaluated at SDXL's own width (320)
and 1024², halved for 16-bit activations (the VAE's stay 32-bit), and added to the weights SDXL holds in 16 bits
(its published parameter counts). It is an estimate: CPU kernels are not CUDA's (PyTorch's CPU attention may keep
more), and the fit's extrapolation spans a factor of 5 in width and 4–16 in pixels. A GPU's figures
replace it when one is lent.

    python scripts/sdxl_memory.py -o docs/sdxl_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# SDXL base 1.0's parameter counts (UNet 2.567e9, CLIP ViT-L text 1.23e8, OpenCLIP bigG text 6.95e8, VAE 8.37e7)
SDXL_PARAMS = {"unet": 2.567e9, "text_encoders": 1.23e8 + 6.95e8, "vae": 8.37e7}
STAGES = ("encode", "lora", "inversion", "drag", "sampling", "decode")
GIB = 2**30


def measure(width: int, size: int, grad_checkpointing: bool, tmp: Path) -> dict[str, float]:
    from dragkit import DragDiffusionPipeline, DragRequest
    from dragkit.utils.testing import build_sdxl_shaped

    folder = tmp / f"sdxl-{width}"
    if not folder.exists():
        build_sdxl_shaped(folder, width=width)
    pipe = DragDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
    c = size / 2
    mask = np.zeros((size, size), bool)
    mask[int(c - size / 4) : int(c + size / 4), int(c - size / 4) : int(c + size / 4)] = True
    req = DragRequest(image, [(c, c)], [(c + size / 16, c)], prompt="a photo", mask=mask, seed=0)
    out = pipe(
        req,
        progress=False,
        resize_width=size,
        lora="train",
        lora_steps=2,
        drag_steps=2,
        inference_steps=10,
        grad_checkpointing=grad_checkpointing,
        source_cache=False,
    )
    prof = out.info["profile"]
    return {s: (prof[s]["peak_bytes"] - prof[s]["base_bytes"]) for s in STAGES if prof.get(s, {}).get("base_bytes")}


VAE_STAGES = ("encode", "decode")  # the VAE is SDXL's own at every width: no width term


def features(width: float, size: float, stage: str) -> list[float]:
    if stage in VAE_STAGES:
        return [size**2, 1.0]
    return [width * size**2, size**2, 1.0]


def fit(rows: list[dict], stage: str) -> np.ndarray:
    x = np.array([features(r["width"], r["size"], stage) for r in rows])
    y = np.array([max(r["stages"].get(stage, 0.0), 0.0) for r in rows])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def estimate(rows: list[dict]) -> dict[str, dict[str, float]]:
    """GiB per stage at width 320 and 1024², halved for 16-bit activations (not the VAE's, which runs in float32),
    with and without checkpointing."""
    out = {}
    for ckpt in (False, True):
        sub = [r for r in rows if r["grad_checkpointing"] == ckpt]
        est = {}
        for stage in STAGES:
            x = np.array(features(320, 1024, stage))
            halve = 1 if stage in VAE_STAGES else 2  # SDXL's VAE runs upcast to float32 (force_upcast)
            est[stage] = max(float(fit(sub, stage) @ x), 0.0) / halve / GIB
        out["grad_checkpointing" if ckpt else "plain"] = est
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--refit", type=Path, help="fit again the measurements of an earlier report (no edits)")
    args = ap.parse_args()
    rows = json.loads(args.refit.read_text())["measured"] if args.refit else []
    with tempfile.TemporaryDirectory(prefix="dragkit-sdxl-mem-") as tmp:
        if not rows:
            measure(min(args.widths), min(args.sizes), False, Path(tmp))  # warm-up: first-use allocations uncounted
        for ckpt in (False, True) if not rows else ():
            for width in args.widths:
                for size in args.sizes:
                    t = time.monotonic()
                    stages = measure(width, size, ckpt, Path(tmp))
                    rows.append({"width": width, "size": size, "grad_checkpointing": ckpt, "stages": stages})
                    mib = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in stages.items())
                    print(f"width {width}, {size}², checkpointing {ckpt}: {mib} MiB ({time.monotonic() - t:.0f} s)")
    weights = {k: v * 2 / GIB for k, v in SDXL_PARAMS.items()}
    weights["vae"] *= 2  # SDXL's VAE overflows in float16 and runs upcast to float32 (force_upcast)
    activations = estimate(rows)
    report = {
        "what": "estimated GiB per stage of a dragdiffusion edit on SDXL at 1024x1024 in 16 bits, from CPU "
        "measurements on SDXL-shaped random-weight models (scripts/sdxl_memory.py); an estimate, not a GPU figure",
        "weights_gib_16bit": weights,
        "activations_gib": activations,
        "measured": rows,
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, est in activations.items():
        print(name, {k: round(v, 2) for k, v in est.items()})
    print("weights", {k: round(v, 2) for k, v in weights.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
