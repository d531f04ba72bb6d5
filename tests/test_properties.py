"""Property-based tests (hypothesis) at every input boundary: whatever a stranger hands us, the answer is a value
that passed validation or one clear :class:`~dragkit.core.errors.DragkitError`, never another exception, and nothing is
written. ``HYPOTHESIS_PROFILE=long`` runs many more examples per property (the CI runs the default)."""

import contextlib
import io
import json
import math
import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from dragkit import DragRequest
from dragkit.bench.datasets import open_dataset, read_bundles, read_drag100, read_dragbench, safe_id, split_points
from dragkit.core.errors import DragkitError, InputError, ParameterError
from dragkit.core.limits import max_pixels
from dragkit.core.params import REGISTRY, parse_assignment
from dragkit.interfaces.cli import parse_drag
from dragkit.methods import METHODS, get_method
from dragkit.utils.io import load_image, load_mask

from .helpers import png_claiming

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
FILES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e9", "1e400", "-1", "0", "", " ", "1_000", "0x10", "١٢", "1,5", "true"]),
    st.text(max_size=12),
)


# --drag and --set ----------------------------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_drag_text_is_four_finite_numbers_or_one_clear_error(text):
    try:
        (x1, y1), (x2, y2) = parse_drag(text)
    except InputError as e:
        assert repr(text) in str(e) and "\n" not in str(e)
        return
    assert all(math.isfinite(v) for v in (x1, y1, x2, y2))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4, max_size=4))
def test_drag_of_any_four_numbers_round_trips_or_is_refused(values):
    text = "{}, {}:{},{}".format(*values)
    try:
        out = parse_drag(text)
    except InputError:
        assert not all(math.isfinite(v) for v in values) or "e" in text.lower()
        return
    assert [*out[0], *out[1]] == pytest.approx([float(v) for v in values])


NUMERIC = sorted(n for n, p in REGISTRY.items() if p.kind in (int, float))


@given(st.sampled_from(sorted(REGISTRY)), NUMBER_TEXT)
def test_set_gives_a_value_inside_the_parameters_range_or_one_clear_error(name, value):
    p = REGISTRY[name]
    try:
        got_name, got = parse_assignment(f"{name}={value}")
    except ParameterError as e:
        assert name in str(e) and "\n" not in str(e)
        return
    assert got_name == name
    if p.kind in (int, float):
        assert isinstance(got, p.kind) and math.isfinite(got)
        assert p.min is None or got >= p.min
        assert (p.max is not None and got <= p.max) or p.kind is float
    if p.choices:
        assert got in p.choices


@pytest.mark.parametrize("text", ["drag_steps=-1", "latent_lr=nan", "r_p=1000000000", "r_p=1e9", "lora_rank=0"])
def test_the_issues_absurd_values_are_refused(text):
    with pytest.raises(ParameterError, match=text.split("=")[0]):
        parse_assignment(text)


def test_every_integer_parameter_is_bounded_so_no_value_can_exhaust_the_machine():
    assert [n for n, p in REGISTRY.items() if p.kind is int and p.max is None] == []


@given(st.sampled_from(sorted(METHODS)), st.dictionaries(st.sampled_from(NUMERIC), NUMBER_TEXT, max_size=4))
def test_a_method_resolves_any_overrides_to_valid_values_or_one_clear_error(method, overrides):
    m = get_method(method)
    try:
        params = m.resolve(overrides)
    except ParameterError as e:
        assert "\n" not in str(e)
        return
    for k, v in params.items():
        assert REGISTRY[k].validate(v) == v


# points and requests ---------------------------------------------------------------------------------------------

POINT = st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))


@given(st.lists(POINT, max_size=5), st.lists(POINT, max_size=5), st.integers(2, 64), st.integers(2, 64))
def test_a_request_holds_valid_points_or_is_one_clear_error(handles, targets, w, h):
    try:
        r = DragRequest(Image.new("RGB", (w, h)), handles, targets)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert len(r.handles) == len(r.targets) >= 1
    assert all(0 <= x <= w - 1 and 0 <= y <= h - 1 for x, y in r.handles + r.targets)


def test_too_many_drag_pairs_are_refused_with_the_limit(monkeypatch):
    pts = [(1.0, 1.0)] * 65
    with pytest.raises(InputError, match="at most 64 drag pairs"):
        DragRequest(Image.new("RGB", (8, 8)), pts, pts)
    monkeypatch.setenv("DRAGKIT_MAX_PAIRS", "100")
    assert len(DragRequest(Image.new("RGB", (8, 8)), pts, pts).handles) == 65
    monkeypatch.setenv("DRAGKIT_MAX_PAIRS", "many")
    with pytest.raises(InputError, match="DRAGKIT_MAX_PAIRS='many'"):
        DragRequest(Image.new("RGB", (8, 8)), pts, pts)


# image files -----------------------------------------------------------------------------------------------------


def _png_bytes(im, **kw):
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(im, **kw):
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_files():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return {"png": _png_bytes(rgb), "jpeg": _jpeg_bytes(rgb)}


@FILES
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_an_image_or_one_clear_error(tmp_path, data):
    f = tmp_path / "x.png"
    f.write_bytes(data)
    try:
        im = load_image(f)
    except InputError as e:
        assert str(f) in str(e)
        return
    assert im.mode == "RGB"


@FILES
@given(kind=st.sampled_from(["png", "jpeg"]), cut=st.floats(0, 0.95))
def test_truncated_files_fail_clearly(tmp_path, good_files, kind, cut):
    data = good_files[kind]
    f = tmp_path / f"x.{kind}"
    f.write_bytes(data[: int(len(data) * cut)])  # cut inside the pixel data (a lost end marker or CRC is harmless)
    with pytest.raises(InputError, match="cannot read"):
        load_image(f)


@FILES
@given(kind=st.sampled_from(["png", "jpeg"]), where=st.floats(0, 0.999), byte=st.integers(0, 255))
def test_a_corrupted_byte_gives_an_image_or_one_clear_error(tmp_path, good_files, kind, where, byte):
    data = bytearray(good_files[kind])
    data[int(len(data) * where)] = byte
    f = tmp_path / f"x.{kind}"
    f.write_bytes(bytes(data))
    try:
        im = load_image(f)
    except InputError:
        return
    assert im.mode == "RGB" and im.width * im.height <= max_pixels()  # a header byte may change the size


def test_zero_byte_and_missing_files_and_folders(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


@FILES
@given(
    mode=st.sampled_from(["L", "LA", "RGB", "RGBA", "P", "PA", "I;16", "I", "1", "CMYK"]),
    w=st.integers(1, 40),
    h=st.integers(1, 40),
    fmt=st.sampled_from(["PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"]),
    seed=st.integers(0, 2**16),
)
def test_every_mode_and_format_loads_as_rgb_of_its_size(tmp_path, mode, w, h, fmt, seed):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    f = tmp_path / f"x.{fmt.lower()}"
    try:
        im.save(f, format=fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # this format cannot hold this mode: nothing to test
    out = load_image(f)
    assert out.mode == "RGB" and out.size == (w, h)


def test_sixteen_bit_palette_alpha_and_exif_rotation(tmp_path):
    deep = Image.fromarray(np.full((6, 8), 65535, np.uint16))
    deep.save(tmp_path / "deep.png")
    assert np.asarray(load_image(tmp_path / "deep.png")).min() == 255
    clear = Image.new("RGBA", (8, 6), (0, 0, 0, 0))
    clear.save(tmp_path / "alpha.png")
    assert np.asarray(load_image(tmp_path / "alpha.png")).min() == 255  # transparent → white
    Image.new("RGB", (8, 6), "red").quantize(4).save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").getpixel((0, 0))[0] > 200
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.new("RGB", (8, 6)).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rot.jpg").size == (6, 8)


@FILES
@given(w=st.integers(1, 2**31 - 1), h=st.integers(1, 2**31 - 1))
def test_images_over_the_pixel_budget_are_refused_from_the_header(tmp_path, w, h):
    assume(w * h > max_pixels())
    f = tmp_path / "bomb.png"
    f.write_bytes(png_claiming(w, h))
    with pytest.raises(InputError, match="over the limit"):
        load_image(f)


def test_the_pixel_budget_is_configurable_and_checked(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    monkeypatch.setenv("DRAGKIT_MAX_PIXELS", "9999")
    with pytest.raises(InputError, match="100x100 = 10,000 pixels, over the limit of 9,999"):
        load_image(tmp_path / "a.png")
    monkeypatch.setenv("DRAGKIT_MAX_PIXELS", "10000")
    assert load_image(tmp_path / "a.png").size == (100, 100)
    monkeypatch.setenv("DRAGKIT_MAX_PIXELS", "-5")
    with pytest.raises(InputError, match="DRAGKIT_MAX_PIXELS='-5'"):
        load_image(tmp_path / "a.png")


# masks -----------------------------------------------------------------------------------------------------------


@FILES
@given(
    arr=st.integers(0, 2**16).map(lambda s: np.random.default_rng(s).integers(0, 256, (12, 10), dtype=np.uint8)),
    size=st.tuples(st.integers(8, 12), st.integers(10, 14)),
    mode=st.sampled_from(["L", "RGB", "RGBA", "LA", "1", "P"]),
)
def test_a_mask_is_a_boolean_array_of_the_images_size_or_one_clear_error(tmp_path, arr, size, mode):
    f = tmp_path / "m.png"
    Image.fromarray(arr).convert(mode).save(f)
    try:
        m = load_mask(f, size)
    except InputError as e:
        assert str(f) in str(e)
        assert size != (10, 12) or "empty" in str(e)
        return
    assert m.dtype == bool and m.shape == (size[1], size[0]) and m.any()


def test_all_zero_all_one_and_wrong_size_masks(tmp_path):
    Image.new("L", (10, 12), 0).save(tmp_path / "zero.png")
    Image.new("L", (10, 12), 255).save(tmp_path / "one.png")
    with pytest.raises(InputError, match="empty"):
        load_mask(tmp_path / "zero.png", (10, 12))
    assert load_mask(tmp_path / "one.png", (10, 12)).all()
    with pytest.raises(InputError, match="10x12 but the image is 12x10"):
        load_mask(tmp_path / "one.png", (12, 10))
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    with pytest.raises(InputError, match="over the limit"):  # refused before its size is even compared
        load_mask(tmp_path / "bomb.png", (10, 12))


# dataset readers and our result bundles -------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(JSONISH)
def test_points_are_pairs_of_finite_numbers_or_one_clear_error(points):
    try:
        handles, targets = split_points(points, "points.json")
    except InputError as e:
        assert str(e).startswith("points.json: ")
        return
    assert len(handles) == len(targets) >= 1
    assert all(math.isfinite(v) for p in handles + targets for v in p)


def _image(folder, name):
    Image.new("RGB", (16, 16), "gray").save(folder / name)


@FILES
@given(record=JSONISH, raw=st.booleans(), data=st.binary(max_size=64))
def test_crafted_drag100_and_bundle_records_read_or_fail_clearly(tmp_path_factory, record, raw, data):
    root = tmp_path_factory.mktemp("ds")
    d100, bundle = root / "d100" / "cat" / "s1", root / "bundles" / "samples" / "cat" / "s1"
    for folder, name, rec in ((d100, "points.json", record), (bundle, "sample.json", record)):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(data if raw else json.dumps(rec).encode())
        _image(folder, "original.png" if name == "points.json" else "source.png")
    for read, where in ((read_drag100, root / "d100"), (read_bundles, root / "bundles")):
        try:
            samples = read(where)
        except InputError:
            continue
        for s in samples:
            assert safe_id(s.id) and len(s.handles) == len(s.targets) >= 1


@FILES
@given(meta=JSONISH)
def test_crafted_dragbench_metadata_reads_or_fails_clearly(tmp_path_factory, meta):
    folder = tmp_path_factory.mktemp("db") / "cat" / "s1"
    folder.mkdir(parents=True)
    (folder / "meta_data.pkl").write_bytes(pickle.dumps(meta))
    _image(folder, "original_image.png")
    try:
        samples = read_dragbench(folder.parent.parent)
    except InputError:
        return
    assert len(samples) == 1


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/dragkit-pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"points": [[1, 2], [3, 4]], "x": Boom()}),
        pickle.dumps({"points": [[1, 2], [3, 4]], "mask": np.array([["a", None]], object)}),
        pickle.dumps({"points": [[1, 2], [3, 4]], "mask": np.array([])}),
        pickle.dumps({"points": [[1, 2], [3, 4]], "mask": [["a"]]}),
        pickle.dumps({"points": [["1", "2"], [3, 4]]}),
        b"\x80\x05garbage",
        b"",
    ],
)
def test_crafted_pickles_are_refused_and_run_nothing(tmp_path, payload):
    folder = tmp_path / "cat" / "s1"
    folder.mkdir(parents=True)
    (folder / "meta_data.pkl").write_bytes(payload)
    _image(folder, "original_image.png")
    with pytest.raises(InputError, match="meta_data.pkl"):
        read_dragbench(tmp_path)
    assert not os.path.exists("/tmp/dragkit-pwned")


@pytest.mark.parametrize("sid", ["../x", "a/../../etc", "a/b/c", "a/..", "./b", "a\\b/c", "a/\x00", "", 5, None])
def test_a_bundles_id_that_would_leave_the_run_folder_is_refused(tmp_path, sid):
    folder = tmp_path / "samples" / "cat" / "s1"
    folder.mkdir(parents=True)
    _image(folder, "source.png")
    (folder / "sample.json").write_text(json.dumps({"id": sid, "handles": [[1, 1]], "targets": [[2, 2]]}))
    if sid in ("", None):  # no id: the folder's own name is used
        assert [s.id for s in read_bundles(tmp_path)] == ["cat/s1"]
        return
    with pytest.raises(InputError, match="expected CATEGORY/NAME"):
        read_bundles(tmp_path)


@FILES
@given(name=st.sampled_from(["points.json", "sample.json", "meta_data.pkl"]), data=st.binary(max_size=200))
def test_open_dataset_on_random_files_reads_or_fails_clearly(tmp_path_factory, name, data):
    root = tmp_path_factory.mktemp("any")
    folder = root / "cat" / "s1"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(data)
    for img in ("original.png", "source.png", "original_image.png"):
        (folder / img).write_bytes(data[:50])
    with contextlib.suppress(DragkitError):  # read, or refused with one clear error: nothing else may escape
        open_dataset(root)


def test_every_torch_load_is_weights_only_and_every_pickle_goes_through_the_restricted_unpickler():
    import re
    from pathlib import Path

    import dragkit

    src = Path(dragkit.__file__).parent
    for f in src.rglob("*.py"):
        text = f.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{f}: {m.group(0)}"
        if f.name != "io.py":  # io.RestrictedUnpickler is the one place that unpickles
            assert not re.search(r"pickle\.(load|loads|Unpickler)\b", text), f


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x04\x956\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x06points\x94]\x94(]\x94(K\x01KprompK\x03K\x04ee"
        b"\x8c\x04mask\x94N\x8c\x06prompt\x94\x8c\x00\x94u.",  # the fuzzer's: a memo index that asked for GBs
        b"\x80\x04r\xff\xff\xff\x7f.",  # LONG_BINPUT 2**31 - 1 on an empty stack
    ],
)
def test_pickles_that_would_allocate_gigabytes_are_refused_cheaply(tmp_path, payload):
    import resource

    folder = tmp_path / "cat" / "s1"
    folder.mkdir(parents=True)
    (folder / "meta_data.pkl").write_bytes(payload)
    _image(folder, "original_image.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="meta_data.pkl"):
        read_dragbench(tmp_path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: well under 200 MB


def test_a_bundle_record_with_an_empty_point_is_one_clear_error(tmp_path):  # found by scripts/fuzz.py
    folder = tmp_path / "samples" / "cat" / "s1"
    folder.mkdir(parents=True)
    _image(folder, "source.png")
    (folder / "sample.json").write_text('{"id": "cat/s1", "handles": [[]], "targets": [[3, 4]]}')
    with pytest.raises(InputError, match="handles: points must be a list of"):
        read_bundles(tmp_path)
