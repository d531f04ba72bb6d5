"""How much faster TAESD decodes than Stable Diffusion's own VAE: both at their real sizes (built from the real
configs in ``../shared/data/model_configs``, random weights: speed depends on the architecture, not the weights),
decoding the same latent, interleaved in one run. Prints the seconds per decode and the ratio (CPU or GPU).

    python scripts/taesd_speed.py --size 512 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model_configs")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (the latent is size/8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    from diffusers import AutoencoderKL, AutoencoderTiny

    def config(path: Path) -> dict:
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}

    torch.manual_seed(0)
    kl = AutoencoderKL.from_config(config(args.configs / "stable-diffusion-v1-5/vae/config.json")).to(args.device)
    tiny = AutoencoderTiny.from_config(config(args.configs / "taesd/config.json")).to(args.device)
    z = torch.randn(1, 4, args.size // 8, args.size // 8, device=args.device)
    times: dict[str, list[float]] = {"sd-vae": [], "taesd": []}
    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first round warms up and is not counted
            for name, decode in (("sd-vae", lambda: kl.decode(z / 0.18215)), ("taesd", lambda: tiny.decode(z))):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                decode()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t)
    med = {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}
    params = {"sd-vae decoder": sum(p.numel() for p in kl.decoder.parameters()),
              "taesd decoder": sum(p.numel() for p in tiny.decoder.parameters())}  # fmt: skip
    print(f"{args.size}x{args.size} on {args.device}, median of {args.repeats}: SD VAE {med['sd-vae']:.3f} s, "
          f"TAESD {med['taesd']:.3f} s per decode: TAESD {med['sd-vae'] / med['taesd']:.1f}x faster; "
          f"decoder parameters {params}")  # fmt: skip


if __name__ == "__main__":
    main()
