"""Inpainting with an SD inpainting checkpoint (a UNet taking the noisy latent, the mask and the masked image's latent:
9 input channels), as Inpaint4Drag runs it: diffusers' inpainting pipeline over the checkpoint's own components,
optionally with an LCM-LoRA fused into the UNet under the LCM scheduler and a tiny autoencoder (TAESD) for speed.

The pipeline is diffusers' own (:class:`~diffusers.StableDiffusionInpaintPipeline`, or its SDXL version for an SDXL
inpainting UNet): mask binarised at 0.5, nearest-downsampled to the latent; the masked image encoded; pure noise at
strength 1; every random draw from the edit's seeded generator (the initial latent, then one per non-final LCM step).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...core.errors import ModelError, ParameterError

logger = logging.getLogger(__name__)

# What Inpaint4Drag's code loads for each family (its setup_pipeline): the LCM-LoRA and the tiny autoencoder.
LCM_LORA = {"sd": "latent-consistency/lcm-lora-sdv1-5", "sdxl": "latent-consistency/lcm-lora-sdxl"}
TINY_VAE = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


def is_inpainting(unet: torch.nn.Module) -> bool:
    """An inpainting UNet: 9 input channels (4 noisy latent, 1 mask, 4 masked-image latent)."""
    return int(getattr(unet.config, "in_channels", 4)) == 9


def load_tiny_vae(name: str, dtype: torch.dtype, device: torch.device) -> Any:
    """TAESD (``AutoencoderTiny``) from a hub id or folder; one line when it cannot be loaded."""
    from diffusers import AutoencoderTiny
    from diffusers.utils import logging as dlogging

    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # its saved config carries a key its loader calls unexpected
    try:
        return AutoencoderTiny.from_pretrained(name, torch_dtype=dtype).to(device)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the tiny autoencoder {name!r}: {first}") from None
    finally:
        dlogging.set_verbosity(verbosity)


class Inpainter:
    """Inpainting over an engine's components (its UNet must be an inpainting one). ``lora``: an LCM-LoRA to fuse
    into the UNet (hub id, folder or file; ``auto``: Inpaint4Drag's for the family; ``none``: the checkpoint's own
    DDIM scheduler, no LoRA); ``vae``: ``auto`` (TAESD for the family), ``model`` (the checkpoint's VAE) or a tiny
    autoencoder's hub id or folder. A fused LoRA stays fused in the UNet (fusing is done once per UNet)."""

    def __init__(self, engine: Any, family: str) -> None:
        if not is_inpainting(engine.unet):
            raise ParameterError(
                f"sampler=inpaint needs an SD inpainting checkpoint (a UNet with 9 input channels, e.g. "
                f"runwayml/stable-diffusion-inpainting); this model's UNet takes {engine.unet.config.in_channels}"
            )
        self.engine, self.family = engine, family

    def _vae(self, name: str) -> Any:
        if name == "model":
            return self.engine.vae
        return self.engine.tiny_vae(TINY_VAE[self.family] if name == "auto" else name)

    def _fuse(self, pipe: Any, lora: str) -> None:
        fused = getattr(self.engine.unet, "_dragkit_fused_lora", None)
        if fused == lora:
            return
        if fused is not None:
            raise ParameterError(
                f"inpaint_lora={lora}: this model's UNet already has {fused} fused into it; load the model again "
                "to use another"
            )
        try:
            pipe.load_lora_weights(lora, adapter_name="lcm")
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot load the LCM-LoRA {lora!r}: {first}") from None
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
        self.engine.unet._dragkit_fused_lora = lora
        logger.info("fused %s into the inpainting UNet", lora)

    def __call__(
        self,
        image: Image.Image,
        mask: np.ndarray,
        prompt: str,
        *,
        steps: int,
        strength: float,
        lora: str,
        vae: str,
        seed: int,
        progress: bool = True,
    ) -> np.ndarray:
        """Inpaint ``mask`` (H, W; True = regenerate) of ``image``; returns the generated image, (H, W, 3) in [0, 1]
        (the whole picture: the caller composites)."""
        import diffusers
        from diffusers.utils import logging as dlogging

        e = self.engine
        lcm = lora != "none"
        verbosity = dlogging.get_verbosity()
        dlogging.set_verbosity_error()  # "config attributes ... will be ignored" when a DDIM config becomes LCM's
        try:
            scheduler = diffusers.LCMScheduler.from_config(e.scheduler.config) if lcm else e.scheduler
        finally:
            dlogging.set_verbosity(verbosity)
        parts: dict[str, Any] = dict(
            vae=self._vae(vae), text_encoder=e.text_encoder, tokenizer=e.tokenizer, unet=e.unet, scheduler=scheduler
        )
        if self.family == "sdxl":
            cls = diffusers.StableDiffusionXLInpaintPipeline
            parts.update(text_encoder_2=e.text_encoder_2, tokenizer_2=e.tokenizer_2)
        else:
            cls = diffusers.StableDiffusionInpaintPipeline
            parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=not progress)
        if lcm:
            dlogging.set_verbosity_error()  # "no LoRA keys for the text encoder": an LCM-LoRA has none
            try:
                self._fuse(pipe, LCM_LORA[self.family] if lora == "auto" else lora)
            finally:
                dlogging.set_verbosity(verbosity)
        w, h = image.size
        out = pipe(
            prompt=prompt,
            image=image,
            mask_image=Image.fromarray(mask.astype(np.uint8) * 255, "L"),
            height=h,
            width=w,
            num_inference_steps=steps,
            strength=strength,
            guidance_scale=1.0,
            generator=torch.Generator(e.device).manual_seed(seed),
            output_type="np",
        ).images[0]
        return np.asarray(out, np.float32)


__all__ = ["LCM_LORA", "TINY_VAE", "Inpainter", "is_inpainting", "load_tiny_vae"]
