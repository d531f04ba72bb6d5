"""CLIP guidance on an edit prompt (CLIPDrag, Jiang, Wang, Chen, ICLR 2025, §3.2): the global term of global-local
motion supervision.

At every drag step the current latent's x0-prediction is decoded to an image and compared with the **edit
prompt** (what the edit should achieve, separate from the prompt the LoRA and the inversion use) by a CLIP model
loaded through transformers (``CLIPModel``). The preprocessing is done in torch, so the loss's gradient reaches the
latent: the whole image resized to CLIP's input size (no crop: a drag near the border must stay in view; the
authors' code average-pools the whole image to 224² as well) and normalized with the model's own mean and std.

Two forms, by name (``clip_loss``):

- ``plain`` (the paper's): ``1 − cos(E_img(x̂₀), E_txt(edit prompt))``;
- ``directional``: ``1 − cos(E_img(x̂₀) − E_img(source), E_txt(edit prompt) − E_txt(prompt))``, the change of the
  image measured against the change of the text (StyleGAN-NADA's direction loss), for edit prompts that describe a
  change rather than a whole image.

The term's gradient group is ``clip``: with ``fusion=glms`` it is the global gradient of
:class:`~dragkit.parts.fusion.GlobalLocalFusion`; without fusion it is simply added. An empty edit prompt gives no
term at all, so the update is exactly the drag's (the authors' code skips the whole update then — a bug).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import ModelError
from ..core.params import Param, register
from ..utils.hub import first_line, looks_like_missing_folder, quiet_transformers

register(
    Param(
        "clip_model",
        str,
        "openai/clip-vit-base-patch16",
        "CLIP guidance: the CLIP model that reads the edit prompt (hub id or local folder; CLIPDrag uses ViT-B/16)",
        "engine:diffusion",
        group="clip guidance",
    ),
    Param(
        "clip_weight",
        float,
        300.0,
        "CLIP guidance: weight of the CLIP loss on the edit prompt (CLIPDrag: 300); used only with an edit prompt",
        "engine:diffusion",
        min=0,
        group="clip guidance",
    ),
    Param(
        "clip_preprocess",
        str,
        "resize",
        "CLIP guidance: how the decoded image reaches CLIP: resize (bilinear to CLIP's size, the image in [0, 1]) or "
        "clipdrag (CLIPDrag's code: an adaptive average pool to that size, then (x + 1)/2, so CLIP sees [0.5, 1])",
        "engine:diffusion",
        choices=("resize", "clipdrag"),
        group="clip guidance",
    ),
    Param(
        "clip_loss",
        str,
        "plain",
        "CLIP guidance: plain (image vs edit prompt) or directional (source→edit image change vs prompt→edit prompt)",
        "engine:diffusion",
        choices=("plain", "directional"),
        group="clip guidance",
    ),
)


@dataclass(frozen=True)
class ClipBundle:
    """A loaded CLIP model with what the torch preprocessing needs."""

    model: Any
    tokenizer: Any
    size: int
    mean: Tensor
    std: Tensor


@functools.lru_cache(maxsize=1)
def load_clip(name: str) -> ClipBundle:
    """A CLIP checkpoint (model, tokenizer, image size and normalization), loaded once per process; a missing or
    unreadable one is a :class:`ModelError` naming it."""
    from transformers import AutoTokenizer, CLIPModel
    from transformers.image_processing_base import ImageProcessingMixin

    if looks_like_missing_folder(name):
        raise ModelError(f"CLIP model folder {name!r} does not exist; point clip_model at a CLIP folder or a hub id")
    try:
        with quiet_transformers():
            model = CLIPModel.from_pretrained(name).eval().requires_grad_(False)
            tokenizer = AutoTokenizer.from_pretrained(name)
            # only the numbers the torch preprocessing needs (the processor class itself wants torchvision)
            proc, _ = ImageProcessingMixin.get_image_processor_dict(name)
    except Exception as e:  # every loading failure is one line naming the model
        raise ModelError(
            f"cannot load CLIP model {name!r} for the edit prompt: {first_line(e)}. Download it once with a network "
            "or point clip_model at a local folder"
        ) from None
    crop = proc.get("crop_size")
    size = crop.get("height") if isinstance(crop, dict) else crop
    mean = proc.get("image_mean", [0.48145466, 0.4578275, 0.40821073])  # OpenAI CLIP's, the usual defaults
    std = proc.get("image_std", [0.26862954, 0.26130258, 0.27577711])
    size = int(size or model.config.vision_config.image_size)
    return ClipBundle(model, tokenizer, size, torch.tensor(mean), torch.tensor(std))


def preprocess(clip: ClipBundle, images: Tensor, mode: str = "resize") -> Tensor:
    """``(B, 3, H, W)`` images in [0, 1] → CLIP's normalized input, differentiably (``mode``: ``clip_preprocess``)."""
    if mode == "clipdrag":  # their code maps the [0, 1] image by (x + 1)/2 a second time
        x = (F.adaptive_avg_pool2d(images.float(), (clip.size, clip.size)) + 1) / 2
    else:
        x = F.interpolate(images.float(), size=(clip.size, clip.size), mode="bilinear", align_corners=False)
    return (x - clip.mean.to(x)[:, None, None]) / clip.std.to(x)[:, None, None]


def image_embeds(clip: ClipBundle, images: Tensor, mode: str = "resize") -> Tensor:
    """L2-normalized CLIP image embeddings of ``(B, 3, H, W)`` images in [0, 1] (gradients flow to the images)."""
    dev = next(clip.model.parameters()).device
    out = clip.model.get_image_features(pixel_values=preprocess(clip, images, mode).to(dev))
    out = out if isinstance(out, Tensor) else out.pooler_output
    return F.normalize(out.float(), dim=-1)


def text_embeds(clip: ClipBundle, texts: list[str]) -> Tensor:
    """L2-normalized CLIP text embeddings."""
    dev = next(clip.model.parameters()).device
    tok = clip.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(dev)
    with torch.no_grad():
        out = clip.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    out = out if isinstance(out, Tensor) else out.pooler_output
    return F.normalize(out.float(), dim=-1)


def clip_loss(image: Tensor, text: Tensor, source_image: Tensor | None = None, source_text: Tensor | None = None):
    """``1 − cos`` between embeddings (plain), or between their changes when the sources are given (directional)."""
    if source_image is not None and source_text is not None:
        image, text = image - source_image, text - source_text
    return 1 - F.cosine_similarity(image, text, dim=-1).mean()


@dataclass
class ClipGuidanceTerm:
    """The loop term: ``weight · clip_loss`` of the decoded x0-prediction the engine puts in the feature output
    (``FeatureOutput.x0_image``, ``(1, 3, H, W)`` in [0, 1]). Group ``clip``: the global gradient of CLIPDrag's
    fusion."""

    clip: ClipBundle
    text: Tensor
    weight: float
    source_image: Tensor | None = None
    source_text: Tensor | None = None
    mode: str = "resize"
    name: str = "clip"
    group: str = "clip"

    @classmethod
    def build(
        cls,
        clip: ClipBundle,
        edit_prompt: str,
        weight: float,
        form: str,
        source: Tensor,
        prompt: str,
        mode: str = "resize",
    ) -> ClipGuidanceTerm:
        """``source``: the input image ``(1, 3, H, W)`` in [0, 1] (directional form); ``prompt``: the image's;
        ``mode``: ``clip_preprocess``."""
        text = text_embeds(clip, [edit_prompt])
        if form == "directional":
            with torch.no_grad():
                src_img = image_embeds(clip, source, mode)
            return cls(clip, text, weight, src_img, text_embeds(clip, [prompt]), mode)
        return cls(clip, text, weight, mode=mode)

    def __call__(self, out: Any, ctx: Any) -> Tensor | None:
        x0 = out.x0_image
        if x0 is None:
            raise RuntimeError("CLIP guidance needs the engine's decoded x0-prediction (FeatureOutput.x0_image)")
        emb = image_embeds(self.clip, x0, self.mode)
        return self.weight * clip_loss(emb, self.text, self.source_image, self.source_text)
