"""Pivotal tuning (Roich, Mokady, Bermano, Cohen-Or, *Pivotal Tuning for Latent-based Editing of Real Images*,
ACM TOG 2022): once a user image has been inverted to a pivot code, the generator itself is tuned so that the pivot
gives the image, by L2 + LPIPS-AlexNet (PTI's losses, weights 1 and 1), Adam at ``pti_lr`` (PTI's 3e-4) for up to
``pti_steps`` (350), stopping early once LPIPS is under ``pti_lpips_stop`` (0.06). The tuning works on a copy: the
engine's generator is left as it was. Generic over generators: ``render(g)`` is the pivot's image under ``g``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.progress import progress_bar
from ...utils.lpips import LPIPS

LPIPS_SIZE = 256  # images are compared at 256 px, as PTI and NVIDIA's projector do (small ones upsampled)


def perceptual_loss(lpips: LPIPS, image: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(L2 + LPIPS, LPIPS)`` of an image ``(1, 3, H, W)`` against the target, both in [-1, 1]; LPIPS at 256 px."""
    l2 = F.mse_loss(image, target)

    def at(x: Tensor) -> Tensor:
        return x if x.shape[-1] == LPIPS_SIZE else F.interpolate(x, size=(LPIPS_SIZE, LPIPS_SIZE), mode="bilinear")

    lp = lpips(at(image), at(target)).mean()
    return l2 + lp, lp


def pivotal_tuning(
    generator: nn.Module,
    render: Callable[[nn.Module], Tensor],
    target: Tensor,
    params: Mapping[str, Any],
    progress: bool = True,
    cancel: Callable[[], bool] | None = None,
) -> tuple[nn.Module, int, bool]:
    """A copy of ``generator`` tuned so ``render(copy)`` matches ``target``; returns it (eval mode, frozen), the steps
    taken and whether ``cancel`` ended the tuning (polled once per step; the copy so far is kept)."""
    tuned = copy.deepcopy(generator).eval()
    for p in tuned.parameters():
        p.requires_grad_(True)
    lpips = LPIPS.pretrained().to(target.device)
    opt = torch.optim.Adam([p for p in tuned.parameters() if p.is_floating_point()], lr=params["pti_lr"])
    hide = None if progress else True
    bar = progress_bar(total=params["pti_steps"], desc="pivotal tuning", disable=hide, leave=False)
    done, cancelled = 0, False
    with torch.enable_grad():
        for _ in range(params["pti_steps"]):
            if cancel is not None and cancel():
                cancelled = True
                break
            loss, lp = perceptual_loss(lpips, render(tuned), target)
            lpips_now = float(lp.detach())
            if lpips_now <= params["pti_lpips_stop"]:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            bar.update(1)
            bar.set_postfix(lpips=f"{lpips_now:.3f}")
    bar.close()
    return tuned.requires_grad_(False), done, cancelled
