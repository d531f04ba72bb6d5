"""LucidDrag's guidance energies: the editing energy and the on-the-fly patch discriminator."""

import numpy as np
import pytest
import torch

from dragkit.parts.guidance import (
    EditingEnergyGuide,
    QualityGuide,
    degrade,
    editing_energy,
    fit_patch_discriminator,
    score,
)

from .helpers import final_features, sample, sampling_pair


def test_editing_energy_pulls_the_target_toward_the_handle_and_the_rest_toward_the_source():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(1, 4, 16, 16, generator=g)
    edited = (src + 0.5 * torch.randn(1, 4, 16, 16, generator=g)).requires_grad_(True)
    h = torch.tensor([[5.0, 5.0]], dtype=torch.float64)
    t = torch.tensor([[5.0, 10.0]], dtype=torch.float64)
    keep = torch.ones(16, 16)
    keep[2:9, 2:13] = 0
    e0 = editing_energy(edited, src, h, t, 1, keep)
    (grad,) = torch.autograd.grad(e0, edited)
    assert float(editing_energy(edited.detach() - 0.1 * grad, src, h, t, 1, keep)) < float(e0.detach())
    perfect = src.clone()
    perfect[..., 4:7, 9:12] = src[..., 4:7, 4:7]  # the handle's patch copied to the target
    assert float(editing_energy(perfect, src, h, t, 1, keep)) < 1e-9


@pytest.mark.slow
def test_the_fitted_discriminator_prefers_the_image_and_its_gradient_raises_the_score(gan_pipe):
    face = gan_pipe.generate(3).image
    x = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    disc = fit_patch_discriminator(x, steps=150)
    g = torch.Generator().manual_seed(1)
    real = float(score(disc, x))
    fakes = [float(score(disc, degrade(x, g))) for _ in range(10)]
    assert sum(real > f for f in fakes) >= 9  # the input's own texture scores above degraded copies
    other = torch.from_numpy(np.asarray(gan_pipe.generate(4).image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    blurred = degrade(other, torch.Generator().manual_seed(0))  # a degraded different face, unseen in fitting
    z = blurred.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(disc, z).sum(), z)
    assert float(score(disc, (blurred + 0.02 * grad.sign()).clamp(0, 1))) > float(score(disc, blurred))


def _setup(pipe):
    z_src, z_edit, embeds, mutual, h, t = sampling_pair(pipe)
    return z_src, z_edit, embeds, mutual, h, t


@pytest.mark.slow
def test_editing_guidance_alone_lowers_the_editing_energy_of_the_sample(pipe):
    z_src, z_edit, embeds, mutual, h, t = _setup(pipe)

    def energy(z):  # the editing energy of a sampled pair, read at the last timestep
        f = final_features(pipe, z, embeds)
        return float(editing_energy(f[1:], f[:1], h, t, 2))

    guide = EditingEnergyGuide(200.0, 1000, 2, h, t, keep=None, keep_weight=1.0, vacate_weight=0.0)
    reports = []
    with torch.no_grad():
        off = sample(pipe, z_src, z_edit, embeds, 3, mutual)
        on = sample(pipe, z_src, z_edit, embeds, 3, mutual, guides=[guide], reports=reports)
        assert torch.equal(on[0], off[0])  # the source branch is untouched
        assert energy(on) < 0.8 * energy(off)
    assert len(reports) == 7 and "edit" in reports[0] and "quality" not in reports[0]


@pytest.mark.slow
def test_quality_guidance_alone_raises_the_discriminator_score_of_the_sample(pipe):
    z_src, z_edit, embeds, mutual, _, _ = _setup(pipe)
    with torch.no_grad():
        source_image = pipe.engine.decode(z_src).float()
    disc = fit_patch_discriminator(source_image, steps=100, crop=32)
    with torch.no_grad():
        off = sample(pipe, z_src, z_edit, embeds, 3, mutual)
        on = sample(pipe, z_src, z_edit, embeds, 3, mutual, guides=[QualityGuide(disc, 50.0, 1000)])
        s_off, s_on = (float(score(disc, pipe.engine.decode(z[1:]).float())) for z in (off, on))
    assert s_on > s_off


def test_the_vacate_term_tells_a_move_from_a_copy():
    """With ``vacate_weight``, the handle's place must take what lay behind it along the drag: a rigid shift of the
    features has zero energy, a copy (the target takes the handle's content, the handle keeps it) does not."""
    g = torch.Generator().manual_seed(0)
    src = torch.randn(1, 4, 16, 16, generator=g)
    h = torch.tensor([[8.0, 6.0]], dtype=torch.float64)
    t = torch.tensor([[8.0, 9.0]], dtype=torch.float64)  # 3 px to the right
    moved = src.clone()
    moved[..., 3:14] = src[..., 0:11]  # everything shifted 3 columns right
    copied = src.clone()
    copied[..., 7:10, 8:11] = src[..., 7:10, 5:8]
    for e in (moved, copied):  # the target term alone cannot tell them apart
        assert float(editing_energy(e, src, h, t, 1)) < 1e-9
    assert float(editing_energy(moved, src, h, t, 1, vacate_weight=1.0)) < 1e-9
    assert float(editing_energy(copied, src, h, t, 1, vacate_weight=1.0)) > 0.5
    off_grid = torch.tensor([[8.0, 1.0]], dtype=torch.float64)  # "behind" lies off the grid: left out, no error
    assert float(editing_energy(src, src, off_grid, off_grid + torch.tensor([0.0, 5.0]), 1, vacate_weight=1.0)) > 0


def test_regional_noise_makes_seed_variants_and_leaves_the_source_branch_alone(pipe):
    from dragkit.engines.diffusion import Variation

    z_src, z_edit, embeds, mutual, _, _ = _setup(pipe)
    region = torch.zeros(1, 1, 10, 12)
    region[..., 2:8, 2:10] = 1
    with torch.no_grad():
        base = sample(pipe, z_src, z_edit, embeds, 3, mutual)
        outs = [
            sample(
                pipe,
                z_src,
                z_edit,
                embeds,
                3,
                mutual,
                variation=Variation(0.5, region, torch.Generator().manual_seed(s)),
            )
            for s in (1, 1, 2)
        ]
    assert all(torch.equal(o[0], base[0]) for o in outs)  # the source branch stays deterministic
    assert torch.equal(outs[0], outs[1])  # the same seed, the same variant
    assert not torch.allclose(outs[0][1:], base[1:], atol=1e-3) and not torch.allclose(outs[0], outs[2], atol=1e-3)
    inside = (outs[0][1:] - base[1:]).abs()[..., 2:8, 2:10].mean()
    outside = (outs[0][1:] - base[1:]).abs().sum() - (outs[0][1:] - base[1:]).abs()[..., 2:8, 2:10].sum()
    assert inside > outside / (120 - 48)  # the fresh noise lands in the region; the rest changes only through it
