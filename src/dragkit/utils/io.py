"""Files in and out: images, masks, atomic writes, result bundles, and a restricted unpickler."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from ..core.errors import InputError, OutputError
from ..core.limits import check_pixels, max_pixels

# mkstemp creates files 0600; results get the permissions any other new file would (read once: umask is global).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _open_checked(p: Path, what: str) -> Image.Image:
    """``Image.open`` (which reads only the header) and the pixel budget checked before anything is decoded."""
    budget = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and budget > Image.MAX_IMAGE_PIXELS:  # a budget raised above PIL's own
        Image.MAX_IMAGE_PIXELS = budget
    with warnings.catch_warnings():  # the budget below is ours; PIL's own bomb warning would only repeat it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(p)
        except Image.DecompressionBombError as e:  # PIL's guard (twice its limit) fired first: the same refusal
            raise InputError(
                f"{what} is over the limit of {budget:,} pixels ({e}): resize it, or raise the limit with "
                "DRAGKIT_MAX_PIXELS"
            ) from None
    try:
        check_pixels(im.width, im.height, what)
    except InputError:
        im.close()
        raise
    return im


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file fully (so truncated files fail here, not later), honour EXIF rotation, return RGB.
    Images over the pixel budget (:func:`dragkit.core.limits.max_pixels`) are refused from their header, undecoded."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    try:
        with _open_checked(p, f"image {p}") as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            if im.mode == "I;16" or im.mode.startswith("I"):
                im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
            return im.convert("RGB")
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {p} as an image: {e}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """An image file's ``(W, H)`` from its header (nothing decoded), with the checks of :func:`load_image`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file not found: {p}")
    try:
        with _open_checked(p, f"image {p}") as im:
            return im.size
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {p} as an image: {e}") from None


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Read a mask image (white / non-zero = may change) and check it matches ``size`` = ``(W, H)``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"mask file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    try:
        with _open_checked(p, f"mask {p}") as im:
            if im.size != tuple(size):  # from the header: a wrong mask is not decoded at all
                raise InputError(
                    f"mask {p} is {im.width}x{im.height} but the image is {size[0]}x{size[1]}: "
                    "they must be the same size"
                )
            im.load()
            if im.mode in ("RGBA", "LA"):
                arr = np.asarray(im.getchannel("A")) if _alpha_is_meaningful(im) else np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("L"))
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read mask {p} as an image: {e}") from None
    out = arr > 127
    if not out.any():
        raise InputError(f"mask {p} is empty (all black): nothing may change. Paint the region that may move")
    return out


def _alpha_is_meaningful(im: Image.Image) -> bool:
    alpha = np.asarray(im.getchannel("A"))
    return bool(alpha.min() < 255)


def check_output_path(path: str | os.PathLike, suffix: str = ".png") -> Path:
    """Validate an output path before any work is done: its folder exists and is writable."""
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise InputError(f"output {p} must end in {suffix}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"output folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable")
    if p.exists() and p.is_dir():
        raise InputError(f"output {p} is a folder")
    return p


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (read-only folder, full disk, ...) into one clear
    :class:`~dragkit.core.errors.OutputError` naming the path and the reason."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise OutputError(f"cannot write {path}: {reason}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours
        return True
    return True


def _sweep(parent: Path, name: str) -> None:
    """Remove what a killed writer of ``name`` left in ``parent``: hidden ``.NAME.PID.*.part`` files or folders
    whose process no longer runs (a running writer's are kept)."""
    for stale in parent.glob(f".{glob.escape(name)}.*.part"):
        pid = stale.name[len(name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write to a hidden ``.NAME.PID.*.part`` file beside ``path``, flush it to disk, rename it over ``path``: a
    reader sees the old file or the whole new one, never part of it. A write killed before the rename leaves only
    the hidden file, and the next write of the same path removes it."""
    with writing(path):
        _sweep(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    _atomic_write(Path(path), lambda f: f.write(data))


def write_png(path: str | os.PathLike, image: Image.Image, text: dict[str, str] | None = None) -> None:
    """Write a PNG atomically, optionally with text chunks (the recipe travels with the pixels)."""
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_itxt(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    write_bytes_atomic(path, buf.getvalue())


def make_tempdir(parent: str | os.PathLike, name: str) -> Path:
    """A hidden temporary folder in ``parent`` for writing ``name`` whole before renaming it into place, with the
    permissions a normal folder would get (``mkdtemp`` makes it private)."""
    with writing(Path(parent) / name):
        _sweep(Path(parent), name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".part", dir=parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_result(result: Any, png_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``OUT.png`` (with the recipe in a text chunk) and ``OUT.json``, each atomically, and
    ``OUT.mask.png`` (white = was allowed to change) when the mask was made automatically (``mask=auto``).

    The JSON goes first and the PNG last, so a PNG on disk always has its JSON (and mask) beside it.
    """
    png = Path(png_path)
    js = png.with_suffix(".json")
    record = result.to_dict()
    text = json.dumps({k: record[k] for k in ("dragkit", "method", "params", "points")})
    write_json(js, record)
    if result.params.get("mask") == "auto" and result.mask is not None:
        write_png(png.with_suffix(".mask.png"), Image.fromarray(result.mask.astype(np.uint8) * 255))
    write_png(png, result.image, {"dragkit": text})
    return png, js


def numbered_path(png_path: str | os.PathLike, k: int) -> Path:
    """Where the ``k``-th of several results goes: ``OUT.png`` for the first (k = 0), then ``OUT.1.png``,
    ``OUT.2.png``, ..."""
    png = Path(png_path)
    return png if k == 0 else png.with_name(f"{png.stem}.{k}{png.suffix}")


def save_results(results: Sequence[Any], png_path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Write several results, best first, as ``OUT.png``, ``OUT.1.png``, ... each with its JSON
    (:func:`save_result`)."""
    return [save_result(r, numbered_path(png_path, k)) for k, r in enumerate(results)]


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickles only plain data and numpy arrays; any other global is refused (a crafted file cannot run code).

    It is the pure-Python unpickler on purpose: the C one keeps its memo in an array sized by the largest index a
    file names, so a few crafted bytes (``LONG_BINPUT 2**31``) allocate gigabytes (found by ``scripts/fuzz.py``).
    """

    ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only plain data and arrays")
        if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy 2 moved it; avoid its warning
            module = module.replace("numpy.core", "numpy._core", 1)
        elif module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = module.replace("numpy._core", "numpy.core", 1)
        return super().find_class(module, name)


MAX_PICKLE_BYTES = 64 * 2**20


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Read a pickle through :class:`RestrictedUnpickler`; files over 64 MB are refused unread."""
    size = os.path.getsize(path)
    if size > MAX_PICKLE_BYTES:
        raise pickle.UnpicklingError(f"{size:,} bytes: larger than the {MAX_PICKLE_BYTES:,} a data file may be")
    with open(path, "rb") as f:
        return RestrictedUnpickler(f).load()
