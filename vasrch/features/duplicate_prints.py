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
All of it comes from one small copy of the decoded image (reduced by a whole factor to about
`WORK` pixels a side): each part is a product of weight matrices with it (area averages over
fractional boxes, the thumbnail's blur folded in), about a quarter of the CPU of the 22 PIL
resizes it replaced.
`prepare` turns a catalog's prints into the form scoring reads: the windows zero-mean and
unit-length, quantised to int8 with one scale each; thumbnails and colours as they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vasrch.features.matrices import finish_matrix, new_matrix

PRINT_VERSION = "grey12-11w-thumb32-colour6-v2"
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
WORK = 56  # about the side of the one reduced copy of the photo that prints are made from
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # PIL's RGB to grey ("L")


PREPARED = ("windows", "scales", "thumbs", "colours")  # the arrays of Prints, in order


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
    """The (PRINT_BYTES,) uint8 print of a decoded RGB image whose file was width x height: the
    image reduced once (by a whole factor, to about WORK pixels a side), then every window, the
    thumbnail and the colours as area averages of it: products with weight matrices."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    rgb = np.asarray(image.reduce(max(1, min(image.size) // WORK)), dtype=np.float32)
    (n_rows, n_cols), longest = rgb.shape[:2], max(width, height, 1)
    rows, cols = _fixed(n_rows, columns=False), _fixed(n_cols, columns=True)
    square_rows, square_cols = _square(n_rows, height, longest), _square(n_cols, width, longest)
    grey = rgb @ _LUMA
    windows = np.empty((WINDOWS, SIDE, SIDE), dtype=np.float32)
    windows[:SQUARE] = rows.windows @ grey @ cols.windows
    windows[SQUARE] = _on_white(
        square_rows.windows @ grey @ square_cols.windows.T, square_rows.windows, square_cols.windows
    )
    colours = np.empty((WINDOWS, COLOUR_SIDE, COLOUR_SIDE, 3), dtype=np.float32)
    colours[:SQUARE] = _colour_cells(rgb, rows.colours, cols.colours)
    square = _colour_cells(rgb, square_rows.colours[None], square_cols.colours.T[None])[0]
    colours[SQUARE] = _on_white(square, square_rows.colours, square_cols.colours)
    thumb = rows.thumb @ grey @ cols.thumb
    return np.concatenate(
        [
            _uint8(windows).reshape(-1),
            _uint8(thumb).reshape(-1),
            _chromaticity(_uint8(colours)).reshape(-1),
        ]
    )


@dataclass(frozen=True)
class _Weights:
    """Area-average weights along one axis of the reduced image (n pixels), for the grey
    windows' cells, the colour windows' cells and the blurred thumbnail's pixels: row weights
    are (..., cells, n), column weights (..., n, cells), so that rows @ image @ columns."""

    windows: np.ndarray
    colours: np.ndarray
    thumb: np.ndarray


@functools.cache
def _fixed(n: int, columns: bool) -> _Weights:
    """The weights of every window but the white square (stacked), and of the thumbnail."""
    lo, hi = (0, 2) if columns else (1, 3)

    def stacked(side: int) -> np.ndarray:
        weights = np.stack([_area_weights(b[lo], b[hi], side, n) for b in BOXES[:SQUARE]])
        if columns:
            weights[MIRROR] = weights[MIRROR][::-1]  # the mirror image's cells run backwards
        return weights.transpose(0, 2, 1) if columns else weights

    thumb = _blur_matrix(THUMB, _THUMB_BLUR) @ _area_weights(0, 1, THUMB, n)
    return _Weights(stacked(SIDE), stacked(COLOUR_SIDE), thumb.T if columns else thumb)


@functools.lru_cache(maxsize=4096)
def _square(n: int, length: int, longest: int) -> _Weights:
    """The white square's weights along an axis where the photo is `length` of `longest`
    pixels (centred, the rest white); its rows' weights (transpose them for columns)."""
    margin = (longest - length) / 2 / max(length, 1)
    grey, colour = (_area_weights(-margin, 1 + margin, side, n) for side in (SIDE, COLOUR_SIDE))
    return _Weights(grey, colour, np.empty(0))


def _area_weights(start: float, end: float, side: int, n: int) -> np.ndarray:
    """(side, n) weights averaging n source pixels over each of `side` equal cells of the
    window from `start` to `end` (fractions of the source, beyond it for padding); a cell's
    weights sum to the share of it that the source covers."""
    edges = (np.arange(n + 1) / n - start) / (end - start)  # source pixels, in window units
    cells = np.arange(side + 1) / side
    low = np.maximum(cells[:-1, None], edges[None, :-1])
    high = np.minimum(cells[1:, None], edges[None, 1:])
    return (np.clip(high - low, 0, None) * side).astype(np.float32)


def _blur_matrix(side: int, sigma: float) -> np.ndarray:
    """(side, side) Gaussian blur of a row of pixels, the edge pixel repeated beyond it."""
    offsets = np.arange(-3, 4)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    matrix = np.zeros((side, side))
    for offset, weight in zip(offsets, kernel / kernel.sum(), strict=True):
        np.add.at(matrix, (np.arange(side), np.clip(np.arange(side) + offset, 0, side - 1)), weight)
    return matrix.astype(np.float32)


def _on_white(inside: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cells of the white square, from the photo's area averages and its (side, n) row and
    column weights: white where the photo does not cover them."""
    blank = _WHITE * (1 - np.outer(rows.sum(axis=1), cols.sum(axis=1)))
    return inside + (blank[..., None] if inside.ndim == 3 else blank)


def _colour_cells(rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(w, side, side, 3) area averages of an RGB image over (w, side, n) row and (w, n, side)
    column weights: the rows of the three channels at once, then the columns."""
    n_rows, n_cols = rgb.shape[:2]
    count, side = rows.shape[:2]
    across = (rows @ rgb.reshape(n_rows, -1)).reshape(count, side, n_cols, 3)
    flat = across.transpose(0, 1, 3, 2).reshape(count, side * 3, n_cols)
    return (flat @ cols).reshape(count, side, 3, -1).transpose(0, 1, 3, 2)


def _uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    """Red and green shares of each cell's brightness (dark cells damped towards grey), as uint8
    out of 255: unchanged by brightness, little moved by contrast, JPEG or overlays."""
    rgb = rgb.astype(np.float32)
    total = rgb.sum(axis=-1, keepdims=True) + _DARK
    shares = (rgb[..., :2] + _DARK / 3) / total
    return np.rint(shares * 255).astype(np.uint8)


def prepare(
    prints: np.ndarray,
    rows: np.ndarray | None = None,
    block: int = 4096,
    out: Path | None = None,
) -> Prints:
    """Raw (n, PRINT_BYTES) uint8 prints (in the order of `rows` when given) as `Prints`,
    `block` rows at a time (small blocks stay in the CPU's cache: 3x faster than 65,536). With
    an `out` folder its four arrays are .npy files there, returned memory-mapped, so with
    memory-mapped `prints` a catalog's prints are never all in memory."""
    rows = np.arange(len(prints)) if rows is None else np.asarray(rows)
    n = len(rows)
    files = (
        dict.fromkeys(PREPARED, None) if out is None else {p: out / f"{p}.npy" for p in PREPARED}
    )
    windows = new_matrix((n, WINDOWS, PIXELS), np.int8, files["windows"])
    scales = new_matrix((n, WINDOWS), np.float32, files["scales"])
    thumbs = new_matrix((n, THUMB, THUMB), np.uint8, files["thumbs"])
    colours = new_matrix((n, WINDOWS, COLOURS), np.uint8, files["colours"])
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
    arrays = (windows, scales, thumbs, colours)
    return Prints(*(finish_matrix(a, files[p]) for a, p in zip(arrays, PREPARED, strict=True)))
