"""The GAN engine over a StyleGAN2 generator: the interface of :class:`~dragkit.engines.gan.engine.GANEngine`
(codes, features from any block, synthesis, inversion) on :class:`~dragkit.engines.gan.stylegan2.StyleGAN2Generator`.

A seed gives the face DragGAN gives for it: ``z = numpy.random.RandomState(seed).randn(1, z_dim)``, mapped to w+
and truncated towards the mean w with ψ = 0.7 (DragGAN's default) on every row. The code a drag optimizes is, at
``latent_block = 0``, the first ``w_layers`` rows of w+ (DragGAN: 6; ``w_space=w``: one w shared by them), the
other rows kept; at ``latent_block = k ≥ 1``, the features and image entering synthesis block ``k`` (a spatial code
that FastDrag's warp can move; the w+ drives the blocks after). Features are the outputs of synthesis blocks
counted from the 4-px one: DragGAN's ``feature_idx = 5`` is the 128-px block.

Files: an NVIDIA network pickle (``.pkl``: StyleGAN2-ADA PyTorch, or the StyleGAN3 repository's StyleGAN2), read
safely (:mod:`~dragkit.engines.gan.nvidia_pkl`: its embedded code is never run), or a folder in dragkit's own
layout: ``init_kwargs.json`` (NVIDIA's constructor arguments) beside ``weights.safetensors`` (``G_ema``'s state under
NVIDIA's names; :func:`save_stylegan` writes one).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...core.errors import ModelError, ParameterError
from ...core.progress import progress_bar
from ...utils.io import write_bytes_atomic
from .engine import GANCode, GANInversion, check_blocks, psnr, resized
from .stylegan2 import StyleGAN2Generator, generator_from_record, generator_from_state

DRAGGAN_PSI = 0.7  # DragGAN's truncation, on every w row
DRAGGAN_FEATURE_BLOCK = 5  # DragGAN's feature_idx: the 128-px block
FIRST_INV_LR = 5e-3  # PTI's first_inv_lr, for the w (then w+) fit


def is_stylegan_path(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` names a StyleGAN file this engine opens (a ``.pkl``, or a folder holding
    ``init_kwargs.json``), without reading it."""
    p = Path(name_or_path)
    return p.suffix == ".pkl" or (p.is_dir() and (p / "init_kwargs.json").is_file())


def load_stylegan(path: str | os.PathLike) -> StyleGAN2Generator:
    """A StyleGAN2 generator from an NVIDIA ``.pkl`` (read safely) or a folder in dragkit's layout."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model {str(p)!r}: no such file or folder")
    if p.is_dir():
        from safetensors.torch import load_file

        weights = p / "weights.safetensors"
        if not weights.is_file():
            raise ModelError(f"{p}: has init_kwargs.json but no weights.safetensors beside it")
        try:
            kwargs = json.loads((p / "init_kwargs.json").read_text())
            state = load_file(str(weights))
        except Exception as e:
            raise ModelError(f"cannot read the StyleGAN generator in {p}: {e}") from None
        return generator_from_state(kwargs, state)
    from .nvidia_pkl import NvidiaPickleError, TFNetworkRecord, generator_record, read_nvidia_pkl

    try:
        record = generator_record(read_nvidia_pkl(p), p)
    except NvidiaPickleError as e:
        raise ModelError(str(e)) from None
    if isinstance(record, TFNetworkRecord):
        raise ModelError(
            f"{p}: a TensorFlow-era StyleGAN pickle; dragkit reads it safely but does not convert its variables: "
            "convert it to a PyTorch pickle with NVIDIA's legacy.py (stylegan2-ada-pytorch: python legacy.py "
            "--source=IN.pkl --dest=OUT.pkl) and open that"
        )
    return generator_from_record(record)


def save_stylegan(generator: StyleGAN2Generator, folder: str | os.PathLike) -> Path:
    """Write ``generator`` in dragkit's layout (``init_kwargs.json`` + ``weights.safetensors``), atomically."""
    from safetensors.torch import save

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    write_bytes_atomic(out / "weights.safetensors", save(state))
    write_bytes_atomic(out / "init_kwargs.json", json.dumps(generator.init_kwargs, indent=1).encode())
    return out


class StyleGANEngine:
    """Drag editing's view of a StyleGAN2 generator (see the module docstring)."""

    family = "stylegan2"

    def __init__(
        self,
        generator: StyleGAN2Generator,
        name: str = "custom",
        truncation_psi: float = DRAGGAN_PSI,
        noise_mode: str = "const",
    ) -> None:
        if not isinstance(generator, StyleGAN2Generator):
            raise ModelError(f"a StyleGAN engine needs a StyleGAN2Generator, not {type(generator).__name__}")
        self.generator = generator.eval().requires_grad_(False)
        self.name = name
        self.truncation_psi = float(truncation_psi)
        self.noise_mode = noise_mode
        self.dtype = torch.float32

    def set_precision(self, dtype: torch.dtype | None) -> StyleGANEngine:
        """Run the synthesis in ``dtype`` under autocast (float16 or bfloat16: on a GPU, as NVIDIA's and DragGAN's code
        run their top blocks in float16; the weights stay float32 and every layer keeps the ±256 clamp); ``None`` or
        float32: plain float32, the reference."""
        if dtype in (None, torch.float32):
            self.dtype = torch.float32
        elif dtype in (torch.float16, torch.bfloat16):
            self.dtype = dtype
        else:
            raise ParameterError(f"dtype {dtype}: a StyleGAN runs in float32, float16 or bfloat16")
        return self

    def _precision(self) -> Any:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, truncation_psi: float = DRAGGAN_PSI) -> StyleGANEngine:
        return cls(load_stylegan(path), name=str(path), truncation_psi=truncation_psi)

    @property
    def synthesis(self) -> Any:
        return self.generator.synthesis

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.synthesis.blocks())

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def resolution(self) -> int:
        return int(self.generator.img_resolution)

    @property
    def num_ws(self) -> int:
        return int(self.generator.num_ws)

    def to(self, device: str | torch.device) -> StyleGANEngine:
        self.generator.to(device)
        return self

    def sample_z(self, seed: int) -> GANCode:
        """The seed's w+ (DragGAN's z, truncated with ``truncation_psi`` on every row) as a code."""
        z = self.generator.z_from_seed(seed).to(self.device)
        with torch.no_grad():
            ws = self.generator.mapping(z, self.truncation_psi)
        return GANCode(ws, 0, styles=ws)

    def model_defaults(self) -> dict[str, Any]:
        """DragGAN's code's numbers for this generator's resolution R (its ``_render_drag_impl`` and UIs): features
        of the 128-px block (the last one below 128 px), motion radius ``round(3/512·R)`` and tracking radius
        ``round(12/512·R)`` (at least 1), stop once every handle is within ``max(2/512·R, 2)`` (theirs is ≤, ours
        strict, hence the next float up), the mask term's λ 20, w+ as the code, PTI's 450 steps for the w fit."""
        r = self.resolution
        return {
            "feature_block": min(DRAGGAN_FEATURE_BLOCK, len(self.blocks) - 1),
            "latent_block": 0,
            "r_m": max(round(3 / 512 * r), 1),
            "r_p": max(round(12 / 512 * r), 1),
            "stop_distance": math.nextafter(max(2 / 512 * r, 2.0), math.inf),
            "lam": 20.0,
            "invert_steps": 450,
        }

    def edit_code(self, code: GANCode, params: Mapping[str, Any]) -> GANCode:
        """The code a drag optimizes from a whole-w+ code (a sample's or a fit's), as ``latent_block``,
        ``w_layers`` and ``w_space`` say."""
        lb = params["latent_block"]
        ws = self.ws_of(code).detach()
        if lb == 0:
            rows = params["w_layers"] or self.num_ws
            if rows > self.num_ws:
                raise ParameterError(f"w_layers={rows}: this generator has {self.num_ws} rows of w+ (0 = all)")
            tensor = ws[:, :1] if params["w_space"] == "w" else ws[:, :rows]
            return GANCode(tensor.clone(), 0, styles=ws, rows=rows)
        x, img, _ = self.synthesis.run_blocks(ws, 0, lb, noise_mode=self.noise_mode)
        return GANCode(torch.cat([x, img], 1).detach(), lb, styles=ws)

    def ws_of(self, code: GANCode) -> Tensor:
        """The whole w+ a code stands for (its rows, then the kept ones)."""
        if code.block != 0:
            if code.styles is None:
                raise ValueError("a StyleGAN spatial code needs its styles")
            return code.styles
        t = code.tensor
        if code.styles is None:
            return t
        n = code.rows or self.num_ws
        if t.shape[1] == 1 and n > 1:
            t = t.expand(-1, n, -1)
        return torch.cat([t, code.styles[:, n:].detach()], 1) if n < self.num_ws else t

    def _split(self, code: GANCode) -> tuple[Tensor, Tensor]:
        c = self.generator.img_channels
        return code.tensor[:, :-c], code.tensor[:, -c:]

    def synthesize(self, code: GANCode) -> Tensor:
        with self._precision():
            if code.block == 0:
                return self.synthesis(self.ws_of(code), self.noise_mode).float()
            x, img = self._split(code)
            return self.synthesis.run_blocks(self.ws_of(code), code.block, None, x, img, self.noise_mode)[1].float()

    def features(self, code: GANCode, feature_block: int, size: tuple[int, int]) -> Tensor:
        """Output of synthesis block ``feature_block`` for ``code``, resized bilinearly to ``size`` (DragGAN's)."""
        with self._precision():
            if code.block == 0:
                x = self.synthesis.run_blocks(self.ws_of(code), 0, feature_block + 1, noise_mode=self.noise_mode)[0]
            else:
                x0, img = self._split(code)
                x = self.synthesis.run_blocks(
                    self.ws_of(code), code.block, feature_block + 1, x0, img, self.noise_mode
                )[0]
        return resized(x.float(), size)

    def check_blocks(self, latent_block: int, feature_block: int) -> None:
        check_blocks(len(self.blocks), latent_block, feature_block)

    def fit(
        self,
        target: Tensor,
        params: Mapping[str, Any],
        seed: int = 42,
        progress: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> GANInversion:
        """Fit a user image ``(1, 3, R, R)`` in [-1, 1]: one w from the mean w by L2 + LPIPS-AlexNet (PTI's first
        inversion: Adam at 5e-3 for ``invert_steps``), then ``invert_method=latent`` refines every row of w+ the
        same way for ``invert_steps`` more, and ``pti`` instead tunes a copy of the generator around the w
        (:func:`~dragkit.engines.gan.pti.pivotal_tuning`; the result's ``engine`` runs it, in this engine's
        precision). The fit itself runs in float32. ``seed`` is unused: it starts from the mean, not random draws."""
        from ...utils.lpips import LPIPS
        from .pti import perceptual_loss, pivotal_tuning

        stopped = cancel if cancel is not None else (lambda: False)
        target = target.to(self.device)
        steps = params["invert_steps"]
        pti = params["invert_method"] == "pti"
        lpips = LPIPS.pretrained().to(self.device)
        w_avg = self.generator.mapping.w_avg.detach()[None, None]
        total = steps if pti else 2 * steps
        bar = progress_bar(total=total, desc="invert", disable=None if progress else True, leave=False)
        done = 0

        def optimise(latent: Tensor, expand: bool) -> Tensor:
            nonlocal done
            latent = latent.clone().requires_grad_(True)
            opt = torch.optim.Adam([latent], lr=FIRST_INV_LR)
            with torch.enable_grad():
                for _ in range(steps):
                    if stopped():
                        break
                    ws = latent.expand(-1, self.num_ws, -1) if expand else latent
                    loss, _ = perceptual_loss(lpips, self.synthesis(ws, self.noise_mode), target)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    done += 1
                    bar.update(1)
            return latent.detach()

        ws = optimise(w_avg, expand=True).expand(-1, self.num_ws, -1).contiguous()
        engine, planned = self, total
        if pti:
            bar.close()
            tuned, tuned_steps, cancelled = pivotal_tuning(
                self.generator, lambda g: g.synthesis(ws, self.noise_mode), target, params, progress, cancel
            )
            engine = StyleGANEngine(tuned, self.name, self.truncation_psi, self.noise_mode).set_precision(self.dtype)
            planned = total + (params["pti_steps"] if cancelled or done < total else tuned_steps)
            done += tuned_steps
        else:
            ws = optimise(ws, expand=False)
            bar.close()
        code = engine.edit_code(GANCode(ws, 0, styles=ws), params)
        with torch.no_grad():
            recon = engine.synthesize(code)
        return GANInversion(code, recon, psnr(recon, target), done, planned, engine if pti else None)
