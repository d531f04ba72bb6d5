"""The composite over the editable mask: outside the mask the result is the source, pixel for pixel."""

import numpy as np
import pytest
from PIL import Image

from dragkit import DragGANPipeline, DragRequest
from dragkit.core.errors import ParameterError
from dragkit.parts.composite import composite, edit_weight


def test_the_weight_is_zero_outside_and_rises_over_the_feather_inside():
    m = np.zeros((20, 30), bool)
    m[5:15, 5:25] = True
    w = edit_weight(m, feather=3)
    assert (w[~m] == 0).all() and w[10, 15] == 1
    row = w[10, 5:11]  # from the mask's left edge inwards: 0.5/3, 1.5/3, 2.5/3, then 1
    np.testing.assert_allclose(row, [1 / 6, 0.5, 5 / 6, 1, 1, 1], rtol=1e-6)
    edge = np.zeros((20, 30), bool)
    edge[:, :10] = True  # a mask touching the image's border: the border is not an edge
    assert edit_weight(edge, 3)[10, 0] == 1
    np.testing.assert_array_equal(edit_weight(m, 0), m.astype(np.float32))


def test_composite_keeps_the_source_outside_the_mask():
    rng = np.random.default_rng(0)
    src = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    out = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    m = np.zeros((20, 30), bool)
    m[5:15, 5:25] = True
    res = np.asarray(composite(src, out, m, 2.0))
    np.testing.assert_array_equal(res[~m], np.asarray(src)[~m])
    np.testing.assert_array_equal(res[10, 15], np.asarray(out)[10, 15])
    with pytest.raises(ValueError, match="differ in size"):
        composite(src, out.resize((10, 10)), m, 2.0)


def test_any_method_can_keep_the_source_outside_its_mask():
    pipe = DragGANPipeline.from_pretrained()
    face = pipe.generate(3)
    m = np.zeros((64, 64), bool)
    m[20:44, 20:44] = True
    req = DragRequest(face.image, [(30, 30)], [(34, 30)], mask=m, seed=0)
    free = pipe(req, code=face.code, drag_steps=5, progress=False)
    kept = pipe(req, code=face.code, drag_steps=5, progress=False, composite="mask")
    src, a, b = (np.asarray(x.image, np.int16) for x in (face, free, kept))
    assert np.abs(a - src)[~m].max() > 0  # the generator changes pixels outside the mask
    np.testing.assert_array_equal(b[~m], src[~m])  # the composite keeps them
    np.testing.assert_array_equal(b[28:36, 28:36], a[28:36, 28:36])  # deep inside, the edit itself
    assert kept.params["composite"] == "mask" and "composite" in kept.info["profile"]
    with pytest.raises(ParameterError, match="composite=mask keeps the image outside the editable mask"):
        pipe(DragRequest(face.image, [(30, 30)], [(34, 30)]), code=face.code, composite="mask", progress=False)
