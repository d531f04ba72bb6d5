"""Train ``faces64``: a small pixel-space diffusion model of 64×64 faces drawn from the bundled DCGAN.

No Stable Diffusion weights exist offline; this model gives every diffusion method real learned features to be
checked on. Reproducible (seeded data stream and initialization) and resumable: it saves ``ckpt.pt`` (model,
EMA, optimizer, step) atomically every ``--save-every`` steps and continues from it when run again.

Usage::

    python scripts/train_faces64.py --out runs/faces64 --steps 20000 [--minutes 60] [--batch 32]
    python scripts/train_faces64.py --out runs/faces64 --export src/dragkit/models/faces64   # EMA, fp16

Recipe (a prototype measured it; see docs/faces64.md): diffusers ``UNet2DModel``, block channels
32/64/128/224, one layer per block, self-attention only at 8×8 (and in the mid block), 1000-step cosine
schedule, ε-prediction, Min-SNR-5 loss weighting, AdamW lr 4e-4 with linear warm-up, batch 32, EMA 0.999,
horizontal flips, fresh DCGAN faces every step, bf16 autocast on CPUs that have it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dragkit.engines.gan import load_generator
from dragkit.utils.testing import FACES64_SCHEDULE, FACES64_UNET

CONFIG, SCHEDULE = FACES64_UNET, FACES64_SCHEDULE


def build(seed: int):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**CONFIG), DDPMScheduler(**SCHEDULE)


def faces(gen: torch.nn.Module, batch: int, step: int, seed: int) -> torch.Tensor:
    """A fresh batch of DCGAN faces in [-1, 1], randomly flipped; the same for the same (seed, step) on one
    device type (CPU and CUDA random streams differ)."""
    dev = next(gen.parameters()).device
    g = torch.Generator(dev).manual_seed(seed * 1_000_003 + step)
    z = torch.randn(batch, gen.z_dim, 1, 1, generator=g, device=dev)
    with torch.no_grad():
        x = gen(z).clamp(-1, 1)
    flip = torch.rand(batch, generator=g, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(source: Path, dest: Path) -> None:
    """Write the EMA weights of a checkpoint (``ckpt.pt`` or an ``ema_STEP.pt`` snapshot) as an fp16 diffusers
    folder (``unet/`` + ``scheduler/`` + ``model_index.json`` + ``training.json``)."""
    from diffusers import DDPMPipeline

    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    unet, sched = build(0)
    unet.load_state_dict(ckpt["ema"])
    DDPMPipeline(unet=unet.to(torch.float16), scheduler=sched).save_pretrained(dest, safe_serialization=True)
    (dest / "training.json").write_text(json.dumps({"step": ckpt["step"], "config": ckpt.get("args")}, indent=2))
    print(f"exported step {ckpt['step']} to {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=0, help="stop (and save) after this long; 0 = no limit")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--snapshot-every", type=int, default=1000, help="keep ema_STEP.pt copies for comparisons")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--export", type=Path, help="export the EMA weights of --out's checkpoint and exit")
    ap.add_argument("--snapshot", type=Path, help="with --export: export this ema_STEP.pt instead of ckpt.pt")
    ap.add_argument(
        "--init-from",
        type=Path,
        help="without a checkpoint in --out, start from an exported folder (model and EMA; fresh optimizer)",
    )
    args = ap.parse_args()
    if args.export:
        export(args.snapshot or args.out / "ckpt.pt", args.export)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    unet, sched = build(args.seed)
    unet.to(dev).train()
    ema = {k: v.detach().clone().float() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    step = 0
    ckpt_path = args.out / "ckpt.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=True)
        unet.load_state_dict(ckpt["model"])
        ema = {k: v.to(dev) for k, v in ckpt["ema"].items()}
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
        print(f"resumed at step {step}")
    elif args.init_from:
        from diffusers import UNet2DModel

        init = UNet2DModel.from_pretrained(args.init_from, subfolder="unet").float().state_dict()
        unet.load_state_dict(init)
        ema = {k: v.detach().clone().float().to(dev) for k, v in init.items()}
        step = json.loads((args.init_from / "training.json").read_text())["step"]
        print(f"initialized from {args.init_from} (step {step}); optimizer state starts fresh")
    gen = load_generator().to(dev)
    alphas = sched.alphas_cumprod.to(dev)
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=args.min_snr) / snr  # Min-SNR-γ for ε-prediction (Hang et al. 2023)
    use_bf16 = not args.no_bf16 and (dev.type == "cuda" or torch.backends.mkldnn.is_available())
    log = open(args.out / "log.jsonl", "a")  # noqa: SIM115 - kept open for the run
    t0 = time.time()
    losses: list[torch.Tensor] = []
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        x0 = faces(gen, args.batch, step, args.seed)
        g = torch.Generator(dev).manual_seed(args.seed * 7919 + step)
        noise = torch.randn(x0.shape, generator=g, device=dev)
        t = torch.randint(0, 1000, (args.batch,), generator=g, device=dev)
        xt = sched.add_noise(x0, noise, t)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = unet(xt, t).sample
        loss = (weight[t] * F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            state = unet.state_dict()
            keys = [k for k, v in state.items() if v.dtype.is_floating_point]
            torch._foreach_lerp_([ema[k] for k in keys], [state[k].float() for k in keys], 1 - decay)
        losses.append(loss.detach())
        done = step >= args.steps or (args.minutes and time.time() - t0 > args.minutes * 60)
        if step % 50 == 0 or done:
            rec = {"step": step, "loss": float(torch.stack(losses).mean()), "sec": round(time.time() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            losses = []
        if step % args.save_every == 0 or done:
            save_atomic(
                {
                    "model": unet.state_dict(),
                    "ema": ema,
                    "opt": opt.state_dict(),
                    "step": step,
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                },
                ckpt_path,
            )
        if step % args.snapshot_every == 0:
            save_atomic({"ema": ema, "step": step}, args.out / f"ema_{step:06d}.pt")
        if done:
            break
    print(f"stopped at step {step} after {math.floor(time.time() - t0)} s")


if __name__ == "__main__":
    main()
