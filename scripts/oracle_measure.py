"""How far dragkit's ``dragdiffusion`` is from what the official DragDiffusion code produced on the oracle of
``../shared/data/oracle/dragdiffusion/``: the figures ``tests/test_oracle.py`` bounds, printed.

    HF_HUB_OFFLINE=1 python scripts/oracle_measure.py      # from the repository's root
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from dragkit import DragDiffusionPipeline, DragRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_oracle import ORACLE, settings  # the test's own mapping of their settings


def measure(pipe: DragDiffusionPipeline, name: str) -> str:
    case = json.loads((ORACLE / f"case_{name}.json").read_text())
    expected = json.loads((ORACLE / f"expected_{name}" / "result.json").read_text())
    tensors = load_file(str(ORACLE / f"expected_{name}" / "tensors.safetensors"))
    mask = None
    if case.get("mask"):
        mask = np.asarray(Image.open(ORACLE / case["mask"]).convert("L")) > 127
    pts = case["points"]
    image = Image.open(ORACLE / case["image"]).convert("RGB")
    request = DragRequest(image, pts[0::2], pts[1::2], mask=mask, prompt=case["prompt"], seed=42)
    steps: list[tuple[list, torch.Tensor]] = []
    decoded: list[torch.Tensor] = []
    vae, decode = pipe.vae, pipe.vae.decode

    def keep(z, *args, **kwargs):  # the sampled latent, as it enters the VAE
        decoded.append(z.clone() * vae.config.scaling_factor)
        return decode(z, *args, **kwargs)

    vae.decode = keep
    try:
        pipe.clear_source_cache()
        out = pipe(
            request,
            progress=False,
            callback=lambda ev: steps.append((ev["handles"].tolist(), ev["latent"])),
            **settings(case),
        )
    finally:
        del vae.decode
    same = [h for h, _ in steps[1:10]] == expected["tracked"]
    inverted = (steps[0][1] - tensors["inverted_latent"]).abs()
    dragged = (steps[-1][1] - tensors["dragged_latent"]).abs()
    final = (decoded[-1] - tensors["final_latents"][1:]).abs()
    theirs = np.asarray(Image.open(ORACLE / f"expected_{name}" / "image.png").convert("RGB"), np.int16)
    pixels = np.abs(np.asarray(out.image, np.int16) - theirs)
    losses = [sum(r["losses"].values()) for r in out.trajectory[:10]]
    loss = max(abs(a - b) for a, b in zip(losses, expected["losses"], strict=True))
    return (
        f"{name}: handles equal at all 9 steps: {same}; inverted latent max {inverted.max():.1e}; dragged latent max "
        f"{dragged.max():.1e} mean {dragged.mean():.1e}; final latent max {final.max():.1e} mean {final.mean():.1e}; "
        f"image max {pixels.max()} mean {pixels.mean():.3f} (1/255); per-step loss max {loss:.1e}"
    )


def main() -> None:
    torch.set_num_threads(2)  # as the oracle was made
    pipe = DragDiffusionPipeline.from_pretrained(ORACLE / "model")
    pipe.set_progress_bar_config(disable=True)
    for name in ("nomask", "mask"):
        print(measure(pipe, name))


if __name__ == "__main__":
    main()
