"""How well does each choice of optimized GAN latent fit a user's image? (the other half of choosing it)

Generated faces are saved as 8-bit PNGs (as a user's file would be), read back and inverted with each
``latent_block``; prints reconstruction PSNR, LPIPS-alex and seconds as a markdown table.

Usage: ``python scripts/gan_inversion_eval.py -n 10 [--blocks 0 1 2 3] [--steps 300] [--restarts 8]``
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from dragkit import DragGANPipeline
from dragkit.bench.metrics import lpips_distance
from dragkit.pipelines.gan import to_pil, to_tensor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=8)
    args = ap.parse_args()
    pipe = DragGANPipeline.from_pretrained()
    print("| latent_block | code shape | PSNR dB (mean ± sd) | LPIPS-alex | seconds |")
    print("|---:|---|---:|---:|---:|")
    for block in args.blocks:
        ps, lp, secs = [], [], []
        for i in range(args.n):
            buf = io.BytesIO()
            pipe.generate(100 + i).image.save(buf, "PNG")
            img = Image.open(buf).convert("RGB")
            t = time.perf_counter()
            inv = pipe.engine.invert(to_tensor(img, 64), block, args.steps, args.restarts, seed=i, progress=False)
            secs.append(time.perf_counter() - t)
            ps.append(inv.psnr)
            lp.append(lpips_distance(img, to_pil(inv.reconstruction)))
        shape = "×".join(map(str, inv.code.tensor.shape[1:]))
        print(
            f"| {block} | {shape} | {np.mean(ps):.1f} ± {np.std(ps):.1f} | {np.mean(lp):.3f} | {np.mean(secs):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
