"""The edits a listing photo commonly goes through before it is uploaded again as a new listing.

`EDITS` holds each edit at its strongest setting within the ranges that the default
`bulk.duplicate_threshold` must catch: resize to 50%, JPEG quality 30, crops of 10% (of every
side, or of two), mirror, brightness and contrast +-20%, a text and a logo overlay, a 3% border
and padding to a white square. `random_edit` draws one edit of a `KINDS` kind with a random
strength within those ranges. Each returns the edited photo and the JPEG quality to save it at.
The duplicate benchmark (benchmarks/bench_duplicates.py) and the duplicate tests plant them on
photos.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

SAVE_QUALITY = 90
WHITE = (255, 255, 255)
KINDS = (
    "resize",
    "recompress",
    "crop",
    "mirror",
    "brightness",
    "contrast",
    "text",
    "logo",
    "border",
    "pad-square",
)
_TEXTS = ("SALE -30%", "NEW", "FREE SHIPPING", "BEST PRICE", "-50% TODAY")
_COLOURS = ((220, 20, 20), (255, 255, 255), (20, 20, 20), (250, 200, 0))

Edit = Callable[[Image.Image], tuple[Image.Image, int]]


def resize(img: Image.Image, factor: float) -> Image.Image:
    """The photo scaled by `factor`."""
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return img.resize(size, Image.Resampling.LANCZOS)


def crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    """The photo without the given fractions of each side."""
    w, h = img.size
    return img.crop(
        (round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))
    )


def text(
    img: Image.Image, words: str = "SALE -30%", at: float = 0.82, colour=(220, 20, 20)
) -> Image.Image:
    """`words` across 70% of the width, centred at height fraction `at`, with a light outline."""
    out = img.copy()
    font = ImageFont.load_default(size=100)
    size = max(8, round(100 * 0.7 * out.width / font.getlength(words)))
    font = ImageFont.load_default(size=size)
    ImageDraw.Draw(out).text(
        (out.width // 2, round(out.height * at)),
        words,
        fill=colour,
        font=font,
        anchor="mm",
        stroke_width=max(1, size // 25),
        stroke_fill=WHITE if colour != WHITE else (0, 0, 0),
    )
    return out


def logo(img: Image.Image, width: float = 0.2, corner: str = "top-right") -> Image.Image:
    """A shop badge (a filled rounded square with letters), `width` of the photo's width wide,
    in a corner."""
    out = img.copy()
    w, h = out.size
    side, margin = max(12, round(w * width)), w // 40
    x0 = w - side - margin if "right" in corner else margin
    y0 = margin if "top" in corner else h - side - margin
    box = (x0, y0, x0 + side, y0 + side)
    draw = ImageDraw.Draw(out)
    draw.rounded_rectangle(box, radius=side // 5, fill=(25, 60, 150))
    font = ImageFont.load_default(size=max(6, side // 3))
    draw.text((x0 + side // 2, y0 + side // 2), "MyS", fill=WHITE, font=font, anchor="mm")
    return out


def border(img: Image.Image, width: float = 0.03, colour=WHITE) -> Image.Image:
    """A frame `width` of the shorter side wide around the photo (the size grows)."""
    return ImageOps.expand(img, border=max(1, round(min(img.size) * width)), fill=colour)


def pad_square(img: Image.Image) -> Image.Image:
    """The photo centred on a white square."""
    side = max(img.size)
    out = Image.new("RGB", (side, side), WHITE)
    out.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return out


EDITS: dict[str, Edit] = {
    "resize-50": lambda im: (resize(im, 0.5), SAVE_QUALITY),
    "jpeg-30": lambda im: (im, 30),
    "crop-10-each-side": lambda im: (crop(im, 0.1, 0.1, 0.1, 0.1), SAVE_QUALITY),
    "crop-10-top-left": lambda im: (crop(im, 0.1, 0.1, 0.0, 0.0), SAVE_QUALITY),
    "mirror": lambda im: (ImageOps.mirror(im), SAVE_QUALITY),
    "brightness+20": lambda im: (ImageEnhance.Brightness(im).enhance(1.2), SAVE_QUALITY),
    "brightness-20": lambda im: (ImageEnhance.Brightness(im).enhance(0.8), SAVE_QUALITY),
    "contrast+20": lambda im: (ImageEnhance.Contrast(im).enhance(1.2), SAVE_QUALITY),
    "contrast-20": lambda im: (ImageEnhance.Contrast(im).enhance(0.8), SAVE_QUALITY),
    "text": lambda im: (text(im), SAVE_QUALITY),
    "logo": lambda im: (logo(im), SAVE_QUALITY),
    "border": lambda im: (border(im), SAVE_QUALITY),
    "pad-square": lambda im: (pad_square(im), SAVE_QUALITY),
}


def random_edit(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One edit of `kind` (see KINDS) with a random strength within the ranges above."""
    img = img.convert("RGB")
    sign = 1 if rng.random() < 0.5 else -1
    if kind == "resize":
        return resize(img, rng.uniform(0.5, 0.9)), SAVE_QUALITY
    if kind == "recompress":
        return img, int(rng.integers(30, 61))
    if kind == "crop":
        return crop(img, *rng.uniform(0, 0.1, 4)), SAVE_QUALITY
    if kind == "mirror":
        return ImageOps.mirror(img), SAVE_QUALITY
    if kind in ("brightness", "contrast"):
        enhancer = ImageEnhance.Brightness if kind == "brightness" else ImageEnhance.Contrast
        return enhancer(img).enhance(1 + sign * rng.uniform(0.1, 0.2)), SAVE_QUALITY
    if kind == "text":
        words = _TEXTS[int(rng.integers(len(_TEXTS)))]
        colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
        return text(img, words, rng.choice([0.12, 0.85]), colour), SAVE_QUALITY
    if kind == "logo":
        corner = ("top-left", "top-right", "bottom-left", "bottom-right")[int(rng.integers(4))]
        return logo(img, rng.uniform(0.12, 0.2), corner), SAVE_QUALITY
    if kind == "border":
        colour = (WHITE, (0, 0, 0), (128, 128, 128))[int(rng.integers(3))]
        return border(img, rng.uniform(0.01, 0.05), colour), SAVE_QUALITY
    if kind == "pad-square":
        return pad_square(img), SAVE_QUALITY
    raise ValueError(f"unknown edit kind {kind!r}; one of {KINDS}")


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    """The photo as the JPEG bytes a shop would upload."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def edited_jpeg(img: Image.Image, edit: str) -> bytes:
    """The photo after the fixed edit `edit` (see EDITS), as JPEG bytes."""
    return jpeg_bytes(*EDITS[edit](img.convert("RGB")))
