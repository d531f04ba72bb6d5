"""Measure a faces64 checkpoint: samples, a KID-style distance to the DCGAN's faces, DDIM inversion PSNR, and
feature correspondence across a known warp.

Usage::

    python scripts/faces64_eval.py MODEL_DIR [--n-kid 2000] [--n-inv 50] [--n-warp 20] [--grid samples.png]

``MODEL_DIR`` is an exported folder (``scripts/train_faces64.py --export``) or ``faces64``. Prints one JSON line.

- KID-style: unbiased MMD² (cubic polynomial kernel, as KID) between samples and DCGAN faces, on LPIPS-AlexNet
  features (each ReLU layer unit-normalized over channels, averaged over space, concatenated: 1,152 dims).
- Inversion: DDIM inversion to strength 0.7 of 50 steps and back (the dragdiffusion preset's), PSNR per face.
- Correspondence: a face and a smooth random warp of it (≤ 6 px) are both inverted to t = 681; for 49 grid
  points the nearest-neighbour match of the UNet features the presets use (``up_blocks[feature_block]``) is
  compared with the known displacement: the share within 4 px.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from dragkit.bench.metrics.lpips import LPIPS, _unit
from dragkit.engines import diffusion as D
from dragkit.engines.gan import load_generator


@torch.no_grad()
def lpips_vectors(x: torch.Tensor, model: LPIPS) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → (B, 1152) spatially averaged unit-normalized AlexNet features."""
    out = []
    for chunk in x.split(250):
        chunk = F.interpolate(chunk, size=(128, 128), mode="bilinear", align_corners=False)
        out.append(torch.cat([_unit(f).mean(dim=(2, 3)) for f in model.layers(chunk)], 1))
    return torch.cat(out)


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD² with k(x, y) = (x·y / d + 1)³ (Bińkowski et al. 2018)."""
    d = a.shape[1]

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float(
        (kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1))
        + (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
        - 2 * kab.mean()
    )


@torch.no_grad()
def sample(pipe, n: int, steps: int = 50, batch: int = 100, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = []
    pipe.scheduler.set_timesteps(steps)
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), 3, 64, 64, generator=g).to(pipe.device)
        for t in pipe.scheduler.timesteps:
            z = pipe.scheduler.step(pipe.unet(z, t).sample, t, z).prev_sample
        out.append(z.clamp(-1, 1))
    return torch.cat(out)


@torch.no_grad()
def dcgan_faces(n: int, seed: int = 12345, device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` DCGAN faces; the latents are drawn on the CPU, so the faces are the same on any device."""
    gen = load_generator().to(device)
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [gen(torch.randn(min(100, n - i), 100, 1, 1, generator=g).to(device)).clamp(-1, 1) for i in range(0, n, 100)]
    )


@torch.no_grad()
def inversion_psnr(pipe, faces: torch.Tensor, batch: int = 50) -> list[float]:
    """PSNR (peak = the [-1, 1] range) of each face after inversion to strength 0.7 and back."""
    out = []
    n_inv = D.inversion_step_count(0.7, 50)
    for i in range(0, len(faces), batch):
        x = faces[i : i + batch]
        zt = pipe.engine.invert(x, None, 50, n_inv, progress=False)
        back = pipe.engine.denoise(zt, None, 50 - n_inv, progress=False)[1]
        mse = ((back.clamp(-1, 1) - x) ** 2).mean(dim=(1, 2, 3)) / 4
        out += (10 * torch.log10(1 / mse)).tolist()
    return out


@torch.no_grad()
def warp_correspondence(pipe, faces: torch.Tensor, block: int, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    n_inv = D.inversion_step_count(0.7, 50)
    pipe.scheduler.set_timesteps(50)
    t = pipe.scheduler.timesteps[50 - n_inv]
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    pts = torch.stack(torch.meshgrid(torch.arange(12, 53, 6.0), torch.arange(12, 53, 6.0), indexing="ij"), -1)
    pts = pts.reshape(-1, 2)  # (row, col)
    hits = []
    for x in faces:
        disp = F.interpolate(
            torch.randn(1, 2, 4, 4, generator=g) * 3, size=(64, 64), mode="bicubic", align_corners=True
        )[0]
        grid = torch.stack([(xx - disp[0]) / 63 * 2 - 1, (yy - disp[1]) / 63 * 2 - 1], -1)[None].to(x.device)
        w = F.grid_sample(x[None], grid, align_corners=True, padding_mode="border")
        feats = []
        for img in (x[None], w):
            zt = pipe.engine.invert(img, None, 50, n_inv, progress=False)
            f = D.unet_forward(pipe.unet, zt, t, {}, [block], need_eps=False).features[block]
            feats.append(F.interpolate(f, size=(64, 64), mode="bilinear", align_corners=False)[0].cpu())
        fa, fb = feats
        c = fb.shape[0]
        flat = F.normalize(fb.reshape(c, -1), dim=0)
        for r, col in pts.long().tolist():
            v = F.normalize(fa[:, r, col], dim=0)
            idx = int(torch.argmax(v @ flat))
            mr, mc = idx // 64, idx % 64
            # where did (r, col) go? the output pixel q samples q - disp(q): solve by fixed-point iteration
            q = torch.tensor([float(r), float(col)])
            for _ in range(20):
                qi = q.round().long().clamp(0, 63)
                q = torch.tensor([r + disp[1, qi[0], qi[1]], col + disp[0, qi[0], qi[1]]])
            hits.append(float(torch.tensor([mr - q[0], mc - q[1]]).norm()) <= 4)
    return float(np.mean(hits))


def main() -> None:
    from dragkit import DragDiffusionPipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--n-kid", type=int, default=2000)
    ap.add_argument("--n-inv", type=int, default=50)
    ap.add_argument("--n-warp", type=int, default=20)
    ap.add_argument("--feature-block", type=int, default=2)
    ap.add_argument("--grid", help="write a 8×8 grid of samples here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    pipe = DragDiffusionPipeline.from_pretrained(args.model, dtype=torch.float32).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    res: dict = {"model": args.model}
    lp = LPIPS.pretrained().to(args.device)
    real = dcgan_faces(max(args.n_kid, args.n_inv, args.n_warp), device=args.device)
    if args.n_kid:
        fake = sample(pipe, args.n_kid)
        res["kid_lpips"] = kid(lpips_vectors(fake, lp), lpips_vectors(real[: args.n_kid], lp))
        # the same statistic between two independent sets of DCGAN faces: the floor
        res["kid_lpips_floor"] = kid(
            lpips_vectors(dcgan_faces(args.n_kid, seed=999, device=args.device), lp),
            lpips_vectors(real[: args.n_kid], lp),
        )
        if args.grid:
            from PIL import Image

            g = ((fake[:64].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            rows = [np.concatenate(list(g[i * 8 : (i + 1) * 8]), 1) for i in range(8)]
            Image.fromarray(np.concatenate(rows, 0)).save(args.grid)
    if args.n_inv:
        ps = inversion_psnr(pipe, real[: args.n_inv])
        res["inversion_psnr_mean"], res["inversion_psnr_min"] = float(np.mean(ps)), float(np.min(ps))
    if args.n_warp:
        res["warp_within_4px"] = warp_correspondence(pipe, real[: args.n_warp], args.feature_block)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
