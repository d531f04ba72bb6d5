"""LucidDrag's guidance energies (Cui et al., NeurIPS 2024, §3.2), as pure functions and one small model: what the
collaborative guidance sampler differentiates with respect to the latent at each denoising step.

- :func:`editing_energy`: the edited branch's features at each target should match the source branch's at its
  handle, and outside the editable region the edited features should stay the source's.
- :class:`PatchDiscriminator` / :func:`fit_patch_discriminator`: the quality term's image-fidelity
  discriminator. LucidDrag trains one on real images; none ships with weights here, so ours is **fitted on the
  fly to the input image's own patches** (real) against degraded copies of them (blur, noise, blockiness, lost
  contrast, shuffled tiles — the artifacts a drag produces). Its score, the mean patch logit, rises as an image
  looks more like the input's own texture; any user-supplied ``torch.nn.Module`` mapping images to logits can
  replace it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.params import Param, default, register
from ..core.protocols import GuideStep
from .closs import correspondence_loss

register(
    Param(
        "guide_edit",
        float,
        300.0,
        "guidance: weight of the editing energy's gradient (classifier-guidance scale; 300 measured on faces64: 10 "
        "does nothing, 1000 breaks the face — other models may need their own, e.g. in their dragkit.json)",
        "engine:diffusion",
        min=0,
        group="guided sampling",
    ),
    Param(
        "guide_keep",
        float,
        1.0,
        "guidance: weight, inside the editing energy, of keeping the features outside the edit region",
        "engine:diffusion",
        min=0,
        group="guided sampling",
    ),
    Param(
        "guide_vacate",
        float,
        1.0,
        "guidance: weight, inside the editing energy, of the handle's own place taking what lies behind it along the "
        "drag (features at h − d), so the content moves instead of being copied (0 = off)",
        "engine:diffusion",
        min=0,
        group="guided sampling",
    ),
    Param(
        "guide_quality",
        float,
        1e-3,
        "guidance: weight of the image-fidelity discriminator's score (LucidDrag: 1e-3; 0 = off)",
        "engine:diffusion",
        min=0,
        group="guided sampling",
    ),
    Param(
        "guide_semantic",
        float,
        1.0,
        "guidance: weight of the intention's source→target prompt direction (text-conditioned models only)",
        "engine:diffusion",
        min=0,
        group="guided sampling",
    ),
    Param(
        "guide_steps",
        int,
        1000,
        "guidance: acts on at most this many of the first sampling steps (default: all)",
        "engine:diffusion",
        min=1,
        group="guided sampling",
    ),
    Param(
        "guide_radius",
        int,
        1,
        "guidance: radius of the feature patches compared (grid pixels)",
        "engine:diffusion",
        min=0,
        group="guided sampling",
    ),
    Param(
        "variant_eta",
        float,
        0.5,
        "guidance: with more results asked for than there are intentions, the extra ones are seed variants, sampled "
        "with this DDIM η inside the edit region (fresh seeded noise where the image may change; DiffEditor's "
        "regional SDE)",
        "engine:diffusion",
        min=0,
        max=1,
        group="guided sampling",
    ),
    Param(
        "discriminator_steps",
        int,
        200,
        "guidance: training steps of the patch discriminator fitted to the input image",
        "engine:diffusion",
        min=1,
        group="guided sampling",
    ),
)


def editing_energy(
    edited: Tensor,
    source: Tensor,
    handles: Tensor,
    targets: Tensor,
    radius: int,
    keep: Tensor | None = None,
    keep_weight: float = 1.0,
    vacate_weight: float = 0.0,
) -> Tensor:
    """``Σ_i mean ‖F_e(t_i + o) − F_s(p_i + o)‖²`` (the target takes the handle's content)
    ``+ vacate_weight · Σ_i mean ‖F_e(p_i + o) − F_s(2p_i − t_i + o)‖²`` (the handle's place takes what lies behind
    it along the drag: with the first term, the patch moves as a rigid shift, ``F_e(q) = F_s(q − d)``, instead of
    being copied)
    ``+ keep_weight · mean_{q ∉ region} ‖F_e(q) − F_s(q)‖²`` (the rest stays).

    ``edited``, ``source``: ``(1, C, h, w)`` features; ``handles``, ``targets``: ``(N, 2)`` ``(row, col)`` grid
    positions; ``keep``: ``(h, w)``, 1 where the image must stay (outside the editable region), or ``None``.
    Gradients flow into ``edited`` only."""
    energy = correspondence_loss(edited, source, handles, targets, radius)
    if vacate_weight > 0:  # offsets whose "behind" position falls off the grid are left out, as in the first term
        energy = energy + vacate_weight * correspondence_loss(edited, source, 2 * handles - targets, handles, radius)
    if keep is not None and keep_weight > 0 and bool(keep.any()):
        w = keep.to(edited)[None, None]
        diff = (edited - source.detach()).pow(2).mean(1, keepdim=True)
        energy = energy + keep_weight * (diff * w).sum() / w.sum()
    return energy


@dataclass(frozen=True)
class EditingEnergyGuide:
    """LucidDrag's editing guidance as a sampling-time part (a ``noise`` guide): ``weight`` × :func:`editing_energy`
    of the edited branch's features against the source branch's, over the first ``steps`` denoising steps. Reports
    the unweighted energy as ``edit``."""

    weight: float
    steps: int
    radius: int
    handles: Tensor
    targets: Tensor
    keep: Tensor | None
    keep_weight: float
    vacate_weight: float
    name: str = "edit"
    kind: Literal["noise"] = "noise"

    def __call__(self, step: GuideStep) -> Tensor:
        e = editing_energy(
            step.edited,
            step.source,
            self.handles,
            self.targets,
            self.radius,
            self.keep,
            self.keep_weight,
            self.vacate_weight,
        )
        step.report[self.name] = round(float(e.detach()), 6)
        return self.weight * e


@dataclass(frozen=True)
class QualityGuide:
    """LucidDrag's quality guidance (a ``noise`` guide): the energy ``−weight · D(x̂₀)``, ``D`` an image-fidelity
    discriminator's score of the decoded x0-prediction of the edited branch. Reports the score as ``quality``."""

    discriminator: nn.Module
    weight: float
    steps: int
    name: str = "quality"
    kind: Literal["noise"] = "noise"

    def __call__(self, step: GuideStep) -> Tensor:
        if step.x0_image is None:
            raise RuntimeError("quality guidance needs the engine's decoded x0-prediction")
        q = score(self.discriminator, step.x0_image()).sum()
        step.report[self.name] = round(float(q.detach()), 6)
        return -self.weight * q


@dataclass(frozen=True)
class SemanticGuide:
    """LucidDrag's semantic guidance (a ``direction`` guide): the offset ``weight · (ε(target prompt) − ε(source
    prompt))`` of the edited branch's noise prediction, the intention's direction in the prompt space.
    ``target``/``source``: the UNet's conditioning for the two prompts (the whole batch's)."""

    weight: float
    steps: int
    target: Mapping[str, Tensor]
    source: Mapping[str, Tensor]
    name: str = "semantic"
    kind: Literal["direction"] = "direction"

    def __call__(self, step: GuideStep) -> Tensor:
        if step.noise is None:
            raise RuntimeError("semantic guidance needs the engine's noise prediction under other prompts")
        return self.weight * (step.noise(self.target) - step.noise(self.source))


class PatchDiscriminator(nn.Module):
    """A small fully-convolutional patch discriminator: ``(B, 3, H, W)`` images in [0, 1] → ``(B, 1, H/2, W/2)``
    logits, one per ~10-px patch."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


def score(disc: nn.Module, images: Tensor) -> Tensor:
    """The discriminator's fidelity score of each image: its mean logit (higher = more like the real patches)."""
    return disc(images).flatten(1).mean(1)


def degrade(x: Tensor, g: torch.Generator) -> Tensor:
    """One random degradation per image of ``(B, 3, H, W)`` in [0, 1]: blur, noise, blockiness, lost contrast or
    shuffled tiles."""
    out = []
    for img in x:
        kind = int(torch.randint(5, (1,), generator=g))
        img = img[None]
        if kind == 0:  # blur
            k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
            k = (k[:, None] * k[None, :]) / 256
            img = F.conv2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5).to(img), groups=3)
        elif kind == 1:  # noise
            img = img + 0.08 * torch.randn(img.shape, generator=g).to(img)
        elif kind == 2:  # blockiness: down and up
            h, w = img.shape[-2:]
            img = F.interpolate(F.interpolate(img, scale_factor=0.25, mode="area"), size=(h, w), mode="nearest")
        elif kind == 3:  # lost contrast, washed out
            img = 0.5 + 0.4 * (img - img.mean())
        else:  # shuffled 8-px tiles: local texture right, structure broken
            h, w = img.shape[-2:]
            t = 8
            tiles = img[..., : h // t * t, : w // t * t].unfold(2, t, t).unfold(3, t, t)  # (1, 3, nh, nw, t, t)
            nh, nw = tiles.shape[2:4]
            flat = tiles.reshape(1, 3, nh * nw, t, t)[:, :, torch.randperm(nh * nw, generator=g)]
            img = img.clone()
            img[..., : nh * t, : nw * t] = (
                flat.reshape(1, 3, nh, nw, t, t).permute(0, 1, 2, 4, 3, 5).reshape(1, 3, nh * t, nw * t)
            )
        out.append(img.clamp(0, 1))
    return torch.cat(out)


def fit_patch_discriminator(
    image: Tensor,
    steps: int = default("discriminator_steps"),
    crop: int = 48,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
) -> PatchDiscriminator:
    """Fit a :class:`PatchDiscriminator` to one image ``(1, 3, H, W)`` in [0, 1]: random crops of it (with flips)
    are real, degraded copies of the same crops fake; logistic loss, Adam. Returns the model in eval mode with
    its parameters frozen."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    image = image.detach().float()
    disc = PatchDiscriminator().to(image.device)
    opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    h, w = image.shape[-2:]
    c = min(crop, h, w)
    with torch.enable_grad():  # also when called under no_grad, as an edit's sampling is
        for _ in range(steps):
            _fit_step(disc, opt, image, c, batch, g)
    return disc.eval().requires_grad_(False)


def _fit_step(
    disc: PatchDiscriminator, opt: torch.optim.Optimizer, image: Tensor, c: int, batch: int, g: torch.Generator
) -> None:
    """One logistic-loss step: ``batch`` random ``c``-px crops of ``image`` (half flipped) against degraded copies."""
    h, w = image.shape[-2:]
    ys = torch.randint(h - c + 1, (batch,), generator=g)
    xs = torch.randint(w - c + 1, (batch,), generator=g)
    real = torch.cat([image[..., y : y + c, x : x + c] for y, x in zip(ys.tolist(), xs.tolist(), strict=True)])
    flip = torch.rand(batch, generator=g) < 0.5
    real = torch.where(flip[:, None, None, None], real.flip(-1), real)
    fake = degrade(real, g)
    loss = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
