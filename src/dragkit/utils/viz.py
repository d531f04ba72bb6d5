"""Pictures of an edit: points drawn on images, before/after grids, the trajectory GIF."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

from ..core.types import Point

HANDLE = (230, 40, 40)
TARGET = (40, 90, 230)


def draw_points(
    image: Image.Image,
    handles: Sequence[Point],
    targets: Sequence[Point],
    scale: int = 1,
    radius: float | None = None,
) -> Image.Image:
    """Red handles, blue targets, an arrow from each handle to its target, numbered; optionally upscaled."""
    im = image.convert("RGB")
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    r = radius if radius is not None else max(2.0, min(im.size) / 90)

    def px(p: Point) -> tuple[float, float]:
        return ((p[0] + 0.5) * scale - 0.5, (p[1] + 0.5) * scale - 0.5)

    for i, (h, t) in enumerate(zip(handles, targets, strict=True)):
        (hx, hy), (tx, ty) = px(h), px(t)
        d.line([(hx, hy), (tx, ty)], fill=(255, 255, 255), width=max(1, int(r / 2)))
        d.ellipse([tx - r, ty - r, tx + r, ty + r], fill=TARGET, outline=(255, 255, 255))
        d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=HANDLE, outline=(255, 255, 255))
        d.text((hx + r + 1, hy - 2 * r), str(i + 1), fill=(255, 255, 255))
    return im


def captioned(image: Image.Image, lines: Sequence[str], height: int = 14) -> Image.Image:
    """``image`` with a white strip below it holding ``lines`` of text (Pillow's default font)."""
    out = Image.new("RGB", (image.width, image.height + height * len(lines) + 4), (255, 255, 255))
    out.paste(image.convert("RGB"), (0, 0))
    d = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        d.text((3, image.height + 2 + i * height), line, fill=(0, 0, 0))
    return out


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    h = max(im.height for im in images)
    w = sum(im.width for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def gif_bytes(frames: Sequence[Image.Image], ms: int = 80, hold_last: int = 10) -> bytes:
    """An animated GIF of ``frames`` (the last one held a little longer)."""
    if not frames:
        raise ValueError("no frames to write")
    frames = list(frames) + [frames[-1]] * hold_last
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0, optimize=True)
    return buf.getvalue()


def bar_chart(
    groups: Sequence[str], values: Sequence[float | None], title: str, width: int = 720, bar_h: int = 18
) -> Image.Image:
    """A horizontal bar chart: one labelled bar per group (``None``: no bar, shown as "–"), values printed."""
    label_w, pad = 190, 8
    h = 28 + len(groups) * (bar_h + 6) + pad
    im = Image.new("RGB", (width, h), "white")
    d = ImageDraw.Draw(im)
    d.text((pad, 6), title, fill="black")
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    span = width - label_w - 70
    for i, (g, v) in enumerate(zip(groups, values, strict=True)):
        y = 28 + i * (bar_h + 6)
        d.text((pad, y + 3), g[:28], fill="black")
        if v is None:
            d.text((label_w, y + 3), "–", fill="gray")
            continue
        d.rectangle([label_w, y, label_w + max(1, round(span * v / top)), y + bar_h], fill=(70, 110, 200))
        d.text((label_w + round(span * v / top) + 4, y + 3), f"{v:.3g}", fill="black")
    return im


def stack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Images one above the other, left-aligned, on white."""
    out = Image.new(
        "RGB", (max(im.width for im in images), sum(im.height for im in images) + gap * (len(images) - 1)), "white"
    )
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out
