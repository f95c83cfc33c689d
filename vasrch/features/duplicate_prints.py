"""Duplicate prints: small grey pictures of a photo that tell its edited copies from other photos.

Cosine similarity of pooled CNN vectors says two photos show the same kind of thing; it does not
tell a re-uploaded, edited copy from another product shot on the same background (on real
catalog photos such pairs score 0.94 while a 10% crop of a photo scores 0.72 against its
original). Prints compare the pixels instead (features.print_similarity scores pairs of them).

A print is `PRINT_BYTES` uint8 values made from the decoded image at extraction: `WINDOWS` grey
windows of `SIDE` x `SIDE` pixels (area averages) — the whole photo and its mirror image, its
centre without 10% of each side, its four 90% corners, the photo without a 1.5, 3 or 5% frame,
and the photo padded to a white square (from its original width and height) — then a slightly
blurred `THUMB` x `THUMB` grey thumbnail of the whole photo, on which a pair's alignment is
refined, then the colour of each window: the red and green share of each cell of a
`COLOUR_SIDE` x `COLOUR_SIDE` grid, so an orange shirt and a purple one of the same cut differ.
`prepare` turns a catalog's prints into the form scoring reads: the windows zero-mean and
unit-length, quantised to int8 with one scale each; thumbnails and colours as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

PRINT_VERSION = "grey12-11w-thumb32-colour6-v1"
SIDE = 12
PIXELS = SIDE * SIDE
WINDOWS = 11
THUMB = 32
COLOUR_SIDE = 6
COLOURS = COLOUR_SIDE * COLOUR_SIDE * 2  # red and green chromaticity of each colour cell
PRINT_BYTES = WINDOWS * PIXELS + THUMB * THUMB + WINDOWS * COLOURS
# (left, top, right, bottom) of each window as fractions of the image, in print order; the mirror
# image (window 1) is the whole flipped, the white square (window 10) is made apart.
BOXES = np.array(
    [
        (0.0, 0.0, 1.0, 1.0),  # whole
        (0.0, 0.0, 1.0, 1.0),  # mirror image
        (0.1, 0.1, 0.9, 0.9),  # centre
        (0.1, 0.1, 1.0, 1.0),  # bottom-right 90%
        (0.0, 0.1, 0.9, 1.0),  # bottom-left 90%
        (0.1, 0.0, 1.0, 0.9),  # top-right 90%
        (0.0, 0.0, 0.9, 0.9),  # top-left 90%
        (0.015, 0.015, 0.985, 0.985),  # without a 1.5% frame
        (0.03, 0.03, 0.97, 0.97),  # without a 3% frame
        (0.05, 0.05, 0.95, 0.95),  # without a 5% frame
        (0.0, 0.0, 1.0, 1.0),  # padded to a white square
    ],
    dtype=np.float32,
)
MIRROR, SQUARE = 1, 10
_THUMB_BLUR = 0.7
_WHITE = 255
_DARK = 30.0
_COLOUR_WORK = 48  # side of the square the colours are taken from


@dataclass(frozen=True)
class Prints:
    """A catalog's prints ready for scoring, one row per image: `windows` (n, WINDOWS, PIXELS)
    int8 zero-mean unit-length windows over `scales` (n, WINDOWS) float32, `thumbs` (n, THUMB,
    THUMB) uint8 blurred grey thumbnails and `colours` (n, WINDOWS, COLOURS) uint8
    chromaticities."""

    windows: np.ndarray
    scales: np.ndarray
    thumbs: np.ndarray
    colours: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)

    def take(self, rows: np.ndarray) -> Prints:
        """The prints of `rows`, in that order."""
        return Prints(self.windows[rows], self.scales[rows], self.thumbs[rows], self.colours[rows])


def make_print(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """The (PRINT_BYTES,) uint8 print of a decoded RGB image whose file was width x height."""
    photo = Image.fromarray(np.ascontiguousarray(pixels))
    grey = photo.convert("L")
    small = photo.resize((_COLOUR_WORK, _COLOUR_WORK), Image.Resampling.BOX)
    windows = [_window(grey, box, SIDE) for box in BOXES[:SQUARE]]
    windows.append(_window(_on_white_square(grey, width, height), BOXES[0], SIDE))
    windows[MIRROR] = windows[0][:, ::-1]
    colours = [_window(small, box, COLOUR_SIDE) for box in BOXES[:SQUARE]]
    colours.append(_window(_on_white_square(small, width, height), BOXES[0], COLOUR_SIDE))
    colours[MIRROR] = colours[0][:, ::-1]
    thumb = grey.resize((THUMB, THUMB), Image.Resampling.BOX)
    thumb = thumb.filter(ImageFilter.GaussianBlur(_THUMB_BLUR))
    return np.concatenate(
        [
            np.stack(windows).reshape(-1),
            np.asarray(thumb).reshape(-1),
            _chromaticity(np.stack(colours)).reshape(-1),
        ]
    )


def _on_white_square(image: Image.Image, width: int, height: int) -> Image.Image:
    """The square `image` (a photo of width x height squeezed square) back to its shape, padded
    to a white square."""
    side = image.width
    scale = side / max(width, height, 1)
    content = (max(1, round(width * scale)), max(1, round(height * scale)))
    square = Image.new(image.mode, (side, side), (_WHITE,) * len(image.getbands()))
    offset = ((side - content[0]) // 2, (side - content[1]) // 2)
    square.paste(image.resize(content, Image.Resampling.BOX), offset)
    return square


def _window(image: Image.Image, box: np.ndarray, side: int) -> np.ndarray:
    w, h = image.size
    crop = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    return np.asarray(image.resize((side, side), Image.Resampling.BOX, box=crop), dtype=np.uint8)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    """Red and green shares of each cell's brightness (dark cells damped towards grey), as uint8
    out of 255: unchanged by brightness, little moved by contrast, JPEG or overlays."""
    rgb = rgb.astype(np.float32)
    total = rgb.sum(axis=-1, keepdims=True) + _DARK
    shares = (rgb[..., :2] + _DARK / 3) / total
    return np.rint(shares * 255).astype(np.uint8)


def prepare(prints: np.ndarray, rows: np.ndarray | None = None, block: int = 4096) -> Prints:
    """Raw (n, PRINT_BYTES) uint8 prints (in the order of `rows` when given) as `Prints`,
    `block` rows at a time (small blocks stay in the CPU's cache: 3x faster than 65,536)."""
    rows = np.arange(len(prints)) if rows is None else np.asarray(rows)
    n = len(rows)
    windows = np.empty((n, WINDOWS, PIXELS), dtype=np.int8)
    scales = np.empty((n, WINDOWS), dtype=np.float32)
    thumbs = np.empty((n, THUMB, THUMB), dtype=np.uint8)
    colours = np.empty((n, WINDOWS, COLOURS), dtype=np.uint8)
    grey_end, thumb_end = WINDOWS * PIXELS, WINDOWS * PIXELS + THUMB * THUMB
    for start in range(0, n, block):
        raw = np.asarray(prints[rows[start : start + block]])
        x = raw[:, : WINDOWS * PIXELS].reshape(len(raw), WINDOWS, PIXELS).astype(np.float32)
        x -= x.mean(axis=2, keepdims=True)
        norm = np.sqrt(np.einsum("nwp,nwp->nw", x, x))
        peak = np.maximum(x.max(axis=2), -x.min(axis=2))
        # One int8 step is peak / 127 of the window, 1 / norm of it scaled to unit length.
        step = np.where(peak > 0, peak / np.float32(127), np.float32(1))
        x *= (1 / step)[:, :, None]
        windows[start : start + len(raw)] = np.rint(x, out=x)
        scales[start : start + len(raw)] = step / np.maximum(norm, np.float32(1e-6))
        thumbs[start : start + len(raw)] = raw[:, grey_end:thumb_end].reshape(-1, THUMB, THUMB)
        colours[start : start + len(raw)] = raw[:, thumb_end:].reshape(-1, WINDOWS, COLOURS)
    return Prints(windows, scales, thumbs, colours)
