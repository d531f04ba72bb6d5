"""DIFT features (Tang et al., NeurIPS 2023) exactly as DragBench's official point-matching script uses them for MD:
Stable Diffusion 2.1 in float32, the image in [-1, 1] at its own size, a VAE latent *sample*, noised to t = 261
with 8 independent noise draws (the ensemble), conditioned on the sample's prompt without classifier-free
guidance; the output of ``up_blocks[1]`` averaged over the ensemble and bilinearly upsampled to the image's size.
The caller seeds torch once per run (the official script uses 42).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

DIFT_MODEL = "stabilityai/stable-diffusion-2-1"


class DiftFeatures:
    """A :class:`dragkit.bench.metrics.FeatureExtractor` over a Stable Diffusion model: a
    :class:`~dragkit.engines.diffusion.DiffusionEngine` (or anything holding one as ``.engine``, a pipeline). The
    harness loads DIFT's checkpoint by name (:func:`dragkit.bench.evaluate.load_dift`); this module never loads a
    method's pipeline, so what it measures cannot depend on what made the edit."""

    def __init__(
        self,
        model: Any,
        device: str | torch.device | None = None,
        t: int = 261,
        up_ft_index: int = 1,
        ensemble: int = 8,
    ) -> None:
        engine = getattr(model, "engine", model)
        if engine.vae is None or not engine.conditional:
            raise ValueError(f"DIFT needs a text-conditioned latent diffusion model; {engine.name} is not one")
        if device is not None:
            for m in (engine.unet, engine.vae, engine.text_encoder):
                m.to(device)
        self.engine = engine
        self.t, self.up_ft_index, self.ensemble = t, up_ft_index, ensemble
        self.name = f"dift[{engine.name}, t={t}, up_ft_index={up_ft_index}, ensemble={ensemble}]"

    @torch.no_grad()
    def __call__(self, image: Image.Image, prompt: str = "") -> Tensor:
        from ...engines.diffusion import unet_forward

        engine = self.engine
        w, h = image.size
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        x = (torch.from_numpy(arr).permute(2, 0, 1)[None] - 0.5) * 2
        x = x.to(engine.device, engine.dtype).repeat(self.ensemble, 1, 1, 1)
        latents = engine.vae.encode(x).latent_dist.sample() * engine.vae.config.scaling_factor
        t = torch.tensor(self.t, device=engine.device)
        noisy = engine.scheduler.add_noise(latents, torch.randn_like(latents), t)
        cond = engine.cond(engine.encode_prompt(prompt), self.ensemble)
        out = unet_forward(engine.unet, noisy, t, cond, [self.up_ft_index], need_eps=False)
        ft = out.features[self.up_ft_index].float().mean(0, keepdim=True)
        return F.interpolate(ft, size=(h, w), mode="bilinear")[0]
