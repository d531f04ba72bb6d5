"""AdaptiveDrag's correspondence loss (CLoss) while sampling: the edited latent's features at each target are
pulled toward the source branch's features at its handle (Chen et al. 2024, §3.4).

The pure loss lives here; the diffusion pipeline applies it during sampling (``closs_weight > 0``): at each of the
first ``closs_steps`` denoising steps after the drag, one Adam step (a fresh optimizer, lr ``closs_lr``) on the
edited latent, **carried forward** into that step's denoising (AdaptiveDrag's released code computes it but never
applies it to the latent it samples from).

Two consequences of the paper's "one Adam step" worth knowing. A fresh Adam step is ``lr · sign(gradient)`` per
element, so the weight does not scale the step (any positive weight acts the same; ``closs_lr`` sets its size).
And the gradient reaches every latent element the UNet's receptive field connects to the targets — on faces64
that is the whole image, which then drifts by ``lr`` per step. So when the edit has a mask (the user's or the
automatic one) the step is confined to it, at the latent's resolution: what may not change does not
(measured in docs/adaptivedrag/README.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.geometry import inside, patch_offsets, sample
from ..core.params import Param, register

register(
    Param(
        "closs_weight",
        float,
        0.0,
        "CLoss while sampling: weight of the correspondence loss (0 = off; AdaptiveDrag uses 100; a fresh Adam step "
        "is scale-free, so any positive weight acts the same and closs_lr sets the step)",
        "engine:diffusion",
        min=0,
    ),
    Param("closs_lr", float, 0.01, "CLoss: Adam step size on the edited latent", "engine:diffusion", min=0),
    Param(
        "closs_steps",
        int,
        1000,
        "CLoss: acts on at most this many of the first sampling steps after the drag (default: all)",
        "engine:diffusion",
        min=1,
    ),
    Param(
        "closs_radius",
        int,
        5,
        "CLoss: radius of the square patches compared, in latent pixels as AdaptiveDrag's code (compared on the "
        "supervision grid: 5 is 20 grid pixels on SD's 256x256 grid, 2 on faces64's 32x32)",
        "engine:diffusion",
        min=0,
    ),
)


def correspondence_loss(edited: Tensor, source: Tensor, handles: Tensor, targets: Tensor, radius: int) -> Tensor:
    """``Σ_i mean ‖F_edit(t_i + o) − F_src(p_i + o)‖²`` over the square patch offsets ``o`` of ``radius`` whose
    positions lie inside the grid on both sides. ``edited``, ``source``: ``(1, C, h, w)`` features; ``handles``,
    ``targets``: ``(N, 2)`` ``(row, col)`` grid positions. Gradients flow into ``edited`` only."""
    grid = tuple(edited.shape[-2:])
    off = patch_offsets(radius, "square")
    total = edited.new_zeros(())
    for p, t in zip(handles, targets, strict=True):
        qt, qp = t + off, p + off
        keep = inside(qt, grid) & inside(qp, grid)
        if keep.any():
            total = total + (sample(edited, qt[keep]) - sample(source.detach(), qp[keep])).pow(2).mean()
    return total


def closs_step(latent: Tensor, loss_of: object, lr: float, where: Tensor | None = None) -> tuple[Tensor, float]:
    """One Adam step (fresh state, so about ``lr`` per element along the gradient's sign) on ``latent`` for the
    loss ``loss_of(latent)``; returns the new latent (detached) and the loss before the step. ``where`` (a 0/1
    tensor broadcastable to the latent) zeroes the gradient outside it, and a fresh Adam step moves an element
    with zero gradient by exactly 0: only the editable region changes."""
    z = latent.detach().float().clone().requires_grad_(True)  # never update the caller's tensor in place
    with torch.enable_grad():
        loss = loss_of(z)  # type: ignore[operator]
        (grad,) = torch.autograd.grad(loss, z)
    if where is not None:
        grad = grad * where.to(grad)
    opt = torch.optim.Adam([z], lr=lr)
    z.grad = grad
    opt.step()
    return z.detach().to(latent.dtype), float(loss.detach())
