"""One browser session's drag: the image, the clicked points and the painted mask, as plain values and pure
functions (Gradio keeps one :class:`Session` per browser session in a ``gr.State``; nothing here is shared).

Clicks alternate: handle, target, handle, target... ``undo`` removes the last click, ``clear`` all of them.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...core.errors import InputError
from ...core.params import parse_assignment
from ...core.types import DragRequest, DragResult, Point
from ...utils.io import image_size, load_image
from ...utils.viz import HANDLE, draw_points

MAX_SIDE = 2048  # larger uploads are refused: the edit would take minutes and gigabytes
DISPLAY = 512  # small images are shown enlarged (whole-pixel steps) to about this many pixels on a side


@dataclass(frozen=True)
class Session:
    image: Image.Image | None = None
    points: tuple[Point, ...] = ()
    mask: np.ndarray | None = field(default=None, repr=False)
    # a generated image's generator (None: the bundled DCGAN) and the exact code that made it: a GAN method edits
    # that code on that generator (as DragGAN does) instead of fitting the picture
    generated: tuple[str | None, Any] | None = field(default=None, repr=False)

    @property
    def handles(self) -> list[Point]:
        return list(self.points[0::2])

    @property
    def targets(self) -> list[Point]:
        return list(self.points[1::2])


def load_upload(path: str | os.PathLike | None) -> Session:
    """An uploaded file as a new session image. Its size is read from the header and refused before anything is
    decoded when it is over ``MAX_SIDE`` on a side or over the pixel budget; then it is read as the command line
    reads images (EXIF rotation, alpha on white, 16-bit and palette images to RGB)."""
    if path is None:
        return Session()
    w, h = image_size(path)
    if max(w, h) > MAX_SIDE:
        raise InputError(f"the image is {w}x{h}; the app takes images up to {MAX_SIDE} pixels on a side")
    return set_image(load_image(path))


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def resolve_model(value: str | None, model_dirs: Sequence[str | os.PathLike] = ()) -> str | None:
    """The model named in the page, checked: empty (the method's default), a packaged model (``faces64``), a name
    relative to one of the app's model folders (``model_dirs``, the first that has it), or a Hugging Face hub id
    (``owner/name``). Any other path is refused: the page must not make the server read arbitrary files."""
    from ...pipelines.diffusion import PACKAGED_MODELS

    value = (value or "").strip()
    if not value:
        return None
    if value in PACKAGED_MODELS:
        return value
    for d in model_dirs:
        root = Path(d).expanduser().resolve()
        candidate = (root / value).resolve()
        if candidate != root and candidate.is_relative_to(root) and candidate.exists():
            return str(candidate)
    local = Path(value).expanduser()
    if HUB_ID.fullmatch(value) and ".." not in value and not local.exists():
        return value
    where = (
        "the app's model folders (" + ", ".join(str(d) for d in model_dirs) + ")"
        if model_dirs
        else "no model folders (start the app with --model-dir DIR to allow some)"
    )
    raise InputError(
        f"model {value!r}: the app loads a hub id (owner/name), a packaged model (faces64) or a model in {where}; "
        "other paths are not read"
    )


GAN_DEFAULT = "dcgan-faces"


def generator_choices(model_dirs: Sequence[str | os.PathLike] = ()) -> list[str]:
    """The generators the page offers: the bundled DCGAN, then every StyleGAN ``.pkl`` (and dragkit-layout StyleGAN
    folder) directly in the app's model folders, by name."""
    names = [GAN_DEFAULT]
    for d in model_dirs:
        root = Path(d).expanduser()
        if root.is_dir():
            names += sorted(p.name for p in root.iterdir() if p.suffix == ".pkl" or (p / "init_kwargs.json").is_file())
    return list(dict.fromkeys(names))


def resolve_generator(value: str | None, model_dirs: Sequence[str | os.PathLike] = ()) -> str | None:
    """The generator named in the page: empty or the bundled DCGAN (None), else a name in the app's model folders
    (:func:`resolve_model`'s rule: no other path is read)."""
    value = (value or "").strip()
    if value in ("", GAN_DEFAULT):
        return None
    return resolve_model(value, model_dirs)


def set_image(image: Image.Image | None) -> Session:
    """A new image: the points and mask of the previous one are dropped. Oversized images are refused."""
    if image is None:
        return Session()
    w, h = image.size
    if max(w, h) > MAX_SIDE:
        raise InputError(f"the image is {w}x{h}; the app takes images up to {MAX_SIDE} pixels on a side")
    return Session(image.convert("RGB"))


def add_click(s: Session, x: float, y: float) -> Session:
    """The next point: a handle if the count is even, else the target of the last handle."""
    if s.image is None:
        raise InputError("upload or generate an image first, then click a handle and its target")
    w, h = s.image.size
    if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
        raise InputError(f"the click at ({x:g}, {y:g}) is outside the {w}x{h} image")
    return replace(s, points=(*s.points, (float(x), float(y))))


def display_scale(size: tuple[int, int]) -> int:
    """How many screen pixels an image pixel takes in the page: small images are enlarged by a whole factor so
    that a 64x64 face is clickable; images of ``DISPLAY`` pixels or more are shown as they are."""
    return max(1, DISPLAY // max(size))


def for_display(image: Image.Image) -> Image.Image:
    """``image`` enlarged by :func:`display_scale` (nearest neighbour: each pixel a crisp square)."""
    k = display_scale(image.size)
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.NEAREST)


def from_display(s: Session, x: float, y: float) -> tuple[float, float]:
    """The image pixel under a click at ``(x, y)`` on the enlarged picture."""
    if s.image is None:
        return float(x), float(y)
    k = display_scale(s.image.size)
    return float(int(x // k)), float(int(y // k))


def undo(s: Session) -> Session:
    return replace(s, points=s.points[:-1])


def clear(s: Session) -> Session:
    return replace(s, points=())


def with_mask(s: Session, mask: np.ndarray | None) -> Session:
    return replace(s, mask=mask)


def annotate(s: Session) -> Image.Image | None:
    """The image with the points, enlarged for the page (:func:`for_display`): red handles, blue targets, arrows,
    numbers; a handle waiting for its target is drawn alone. The painted mask is shown lighter outside."""
    if s.image is None:
        return None
    im = s.image
    if s.mask is not None:
        arr = np.asarray(im, dtype=np.float32)
        arr = np.where(s.mask[..., None], arr, 0.55 * arr + 0.45 * 255)
        im = Image.fromarray(arr.astype(np.uint8))
    pairs = len(s.points) // 2
    k = display_scale(im.size)
    out = draw_points(im, s.handles[:pairs], s.targets[:pairs], scale=k)
    if len(s.points) % 2:
        from PIL import ImageDraw

        x, y = ((c + 0.5) * k - 0.5 for c in s.points[-1])
        r = max(2.0, min(out.size) / 90)
        ImageDraw.Draw(out).ellipse([x - r, y - r, x + r, y + r], fill=HANDLE, outline=(255, 255, 255))
    return out


def mask_from_editor(value: Any, size: tuple[int, int]) -> np.ndarray | None:
    """The editable mask from a Gradio ``ImageEditor`` value (``{"background", "layers", "composite"}``): every
    painted pixel (any layer, alpha > 0) may change. ``None`` when nothing is painted."""
    if not value:
        return None
    layers = value.get("layers") if isinstance(value, dict) else None
    if not layers:
        return None
    painted = None
    for layer in layers:
        if layer is None:
            continue
        im = layer if isinstance(layer, Image.Image) else Image.fromarray(np.asarray(layer))
        alpha = np.asarray(im.convert("RGBA"))[..., 3] > 0
        painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return None
    if painted.shape != (size[1], size[0]):
        painted = np.asarray(Image.fromarray(painted).resize(size, Image.NEAREST))
    return painted


def parse_advanced(text: str) -> dict[str, Any]:
    """The "Advanced" box: one ``NAME=VALUE`` per line (blank lines and ``#`` comments ignored), each checked."""
    out: dict[str, Any] = {}
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = parse_assignment(line)
            out[name] = value
    return out


def build_request(s: Session, prompt: str = "", edit_prompt: str = "", seed: int = 42) -> DragRequest:
    """The edit this session asks for; a clear error when it is incomplete."""
    if s.image is None:
        raise InputError("upload or generate an image first")
    if not s.points:
        raise InputError("no points: click a handle on the image, then its target")
    if len(s.points) % 2:
        raise InputError(f"handle {len(s.points) // 2 + 1} has no target yet: click where it should go")
    return DragRequest(
        s.image, s.handles, s.targets, mask=s.mask, prompt=prompt, seed=int(seed), edit_prompt=edit_prompt
    )


def bundle_bytes(results: list[DragResult]) -> bytes:
    """A zip of the results: ``result.png`` (``result.1.png``, ...), its JSON, the mask and the points."""
    from ...utils.io import numbered_path

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, r in enumerate(results):
            name = numbered_path("result.png", k).name
            png = io.BytesIO()
            r.image.save(png, format="PNG")
            z.writestr(name, png.getvalue())
            z.writestr(name.replace(".png", ".json"), json.dumps(r.to_dict(), indent=2))
        first = results[0]
        z.writestr("points.json", json.dumps({"handles": first.handles_initial, "targets": first.targets}))
        if first.mask is not None:
            m = io.BytesIO()
            Image.fromarray(first.mask.astype(np.uint8) * 255).save(m, format="PNG")
            z.writestr("mask.png", m.getvalue())
        src = io.BytesIO()
        first.source.save(src, format="PNG")
        z.writestr("source.png", src.getvalue())
    return buf.getvalue()
