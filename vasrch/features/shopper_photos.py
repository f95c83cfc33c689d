"""Simulated shopper photos: a catalog photo changed the way a shopper's own photo of the product
differs from it, so that a run without held-out photos can calibrate its probes on queries
unlike its catalog.

Each simulated photo, drawn from a seeded generator: mirrored half the time; either cropped in
(55-90% of the side, anywhere) or shrunk (55-85%) onto a new background (a flat colour with
noise); tilted up to 12 degrees; its brightness, contrast and saturation changed by up to 30-40%
and its colour balance by up to 15% a channel; blurred (up to 1.5 pixels at the network's size);
then saved as a JPEG of quality 45-90 and decoded again at the network's input size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from vasrch.catalog.images import DEFAULT_MAX_PIXELS, Decoded, decode_image

WORK_SCALE = 2  # photos are changed at twice the network's size, then reduced to it


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    colour = rng.integers(0, 256, 3)
    noise = rng.normal(0.0, rng.uniform(4, 24), (side, side, 1))
    return Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))


def _frame(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cropped in, or shrunk onto a new background; then tilted."""
    side = image.size[0]
    if rng.random() < 0.5:
        keep = int(side * rng.uniform(0.55, 0.9))
        left, top = rng.integers(0, side - keep + 1, 2)
        framed = image.crop((left, top, left + keep, top + keep)).resize((side, side))
    else:
        small = int(side * rng.uniform(0.55, 0.85))
        framed = _background(rng, side)
        left, top = rng.integers(0, side - small + 1, 2)
        framed.paste(image.resize((small, small)), (int(left), int(top)))
    fill = tuple(int(v) for v in np.asarray(framed)[0, 0])
    return framed.rotate(rng.uniform(-12, 12), Image.BILINEAR, fillcolor=fill)


def _recolour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    gains = rng.uniform(0.85, 1.15, 3)
    return Image.fromarray(np.clip(np.asarray(image) * gains, 0, 255).astype(np.uint8))


def shopper_photo(pixels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A simulated shopper's photo (size, size, 3) uint8 of a photo's (s, s, 3) uint8 pixels."""
    image = Image.fromarray(pixels)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = _recolour(_frame(image, rng), rng)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5) * WORK_SCALE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(45, 91)))
    decoded = decode_image(out.getvalue(), size)
    assert isinstance(decoded, Decoded)  # a JPEG just written always decodes
    return decoded.pixels


def simulate_shopper_photos(
    paths: Sequence[str | Path], size: int, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[int], np.ndarray]:
    """(positions of the photos that decoded, their simulated shopper photos (n, size, size, 3)
    uint8), drawn reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    kept, out = [], []
    for i, path in enumerate(paths):
        decoded = decode_image(Path(path), size * WORK_SCALE, max_pixels)
        if isinstance(decoded, Decoded):
            kept.append(i)
            out.append(shopper_photo(decoded.pixels, rng, size))
    return kept, np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
