import io
import pickle

import numpy as np
import pytest
from PIL import Image

from dragkit import DragRequest, InputError
from dragkit.core.errors import OutputError
from dragkit.utils.io import check_output_path, load_image, load_mask, safe_unpickle, write_bytes_atomic

IMG = Image.new("RGB", (64, 48), (100, 120, 140))


@pytest.mark.parametrize(
    ("handles", "targets", "message"),
    [
        ([(64, 10)], [(10, 10)], r"handle 1 at \(64, 10\) is outside the 64x48 image"),
        ([(10, 10)], [(10, -1)], r"target 1 at \(10, -1\) is outside"),
        ([(10, 10), (20, 20)], [(12, 12)], "2 handles but 1 targets"),
        ([], [], "no drag given"),
        ([(float("nan"), 1)], [(1, 1)], "must be finite"),
        ([(1, 2, 3)], [(1, 1)], "pair of numbers"),
    ],
)
def test_request_rejects_bad_points(handles, targets, message):
    with pytest.raises(InputError, match=message):
        DragRequest(IMG, handles, targets)


def test_request_reports_noop_pairs_and_converts_modes():
    r = DragRequest(IMG.convert("L"), [(5, 5), (6, 6)], [(5, 5), (9, 9)])
    assert r.noop_pairs == [0] and r.image.mode == "RGB"


def test_request_mask_checks():
    ok = np.zeros((48, 64), np.uint8)
    ok[10:20, 10:20] = 1
    assert DragRequest(IMG, [(1, 1)], [(2, 2)], mask=ok).mask.sum() == 100
    with pytest.raises(InputError, match="mask is 48x64 but the image is 64x48"):
        DragRequest(IMG, [(1, 1)], [(2, 2)], mask=np.ones((64, 48)))
    with pytest.raises(InputError, match="mask is empty"):
        DragRequest(IMG, [(1, 1)], [(2, 2)], mask=np.zeros((48, 64)))
    gray = np.zeros((48, 64), np.uint8)
    gray[0, 0] = 200
    gray[0, 1] = 100
    assert DragRequest(IMG, [(1, 1)], [(2, 2)], mask=gray).mask.sum() == 1


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "noise.jpg")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_load_image_modes(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # transparent over white
    Image.new("P", (8, 8), 3).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").mode == "RGB"
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "g16.png")
    assert load_image(tmp_path / "g16.png").getpixel((0, 0)) == (255, 255, 255)


def test_load_mask(tmp_path):
    m = np.zeros((48, 64), np.uint8)
    m[5:10, 5:10] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png", (64, 48)).sum() == 25
    with pytest.raises(InputError, match="mask .* is 64x48 but the image is 48x64"):
        load_mask(tmp_path / "m.png", (48, 64))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read mask"):
        load_mask(tmp_path / "bad.png", (64, 48))


def test_output_path_checks(tmp_path):
    assert check_output_path(tmp_path / "o.png") == tmp_path / "o.png"
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "o.png")
    with pytest.raises(InputError, match="must end in .png"):
        check_output_path(tmp_path / "o.jpg")


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import os

    target = tmp_path / "x.bin"
    write_bytes_atomic(target, b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match="cannot write .*x.bin: disk full"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"points": [[1, 2]], "mask": np.ones((2, 2), np.uint8), "prompt": "x"}))
    assert safe_unpickle(ok)["mask"].sum() == 4
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        safe_unpickle(bad)
