"""The source cache (``source_cache``): the last source an engine edited — its inverted latent and its source
branch's inputs to the mutual self-attention layers at every sampling step — so that a later edit of the same image
skips the inversion and denoises the edited branch alone. It is exact: the source branch's self-attention reads only
itself, so its inputs do not depend on the edit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from PIL import Image
from torch import Tensor

Records = dict[int, dict[str, Tensor]]
"""The mutual layers' inputs by timestep: ``{int(t): {module path: input}}``."""


@dataclass
class SourceRecord:
    key: tuple
    latent: Tensor
    inputs: Records


class SourceCache:
    """One source kept per engine (the old one's memory is freed before the next is inverted)."""

    def __init__(self) -> None:
        self._kept: SourceRecord | None = None

    def get(self, key: tuple | None) -> SourceRecord | None:
        """The kept source when ``key`` names it, else ``None``."""
        if key is None or self._kept is None or self._kept.key != key:
            return None
        return self._kept

    def put(self, key: tuple, latent: Tensor, inputs: Records) -> None:
        self._kept = SourceRecord(key, latent, inputs)

    def clear(self) -> None:
        self._kept = None

    @staticmethod
    def key(
        parts: dict[str, Any],
        image: Image.Image,
        prompt: str,
        size: tuple[int, int],
        params: dict[str, Any],
        lora_cache: str | None,
        mutual: list[str],
    ) -> tuple:
        """Everything the inverted latent and the source branch's sampling depend on: the model's identity
        (``parts``: the UNet, the scheduler, the device and dtype), the image's pixels, the prompt, the working size,
        the schedule and precision, the LoRA (by its cache folder), the layers recorded and how."""
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        settings = (
            params["inference_steps"],
            params["inversion_strength"],
            params["autocast"],
            params["lcm_guidance"],
        )
        return (
            parts["unet"],
            parts["scheduler"],
            digest,
            image.mode,
            image.size,
            size,
            prompt,
            params["lora"],
            lora_cache,
            settings,
            bool(params["channels_last"]),
            params["source_kv"],
            tuple(mutual),
            parts["device"],
            parts["dtype"],
        )
