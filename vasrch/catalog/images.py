"""Safe image decoding: any file in, a fixed-size RGB array or a rejection with a reason out.

Decoding rules (the contract other modules rely on):

- The format is sniffed from the bytes, never from the extension, and only the formats named in
  ``DECODABLE_FORMATS`` are decoded (so a ``.jpg`` that is really a PNG works, while an EPS, ICO
  or PSD named ``.jpg`` is rejected instead of reaching a riskier decoder).
- The pixel count declared in the header is checked against ``max_pixels`` before any pixel is
  decoded. Pillow's own hard limit (2 x ``Image.MAX_IMAGE_PIXELS``) still applies on top; images
  between ``Image.MAX_IMAGE_PIXELS`` and that limit make Pillow emit a
  ``DecompressionBombWarning`` before vasrch's check rejects them. No Pillow global is changed.
- EXIF orientation is applied (as ``ImageOps.exif_transpose`` does); ``width``/``height`` are the
  original size after that rotation.
- Animations (GIF, WebP, multi-page TIFF) give their first frame.
- Modes become RGB: palette (with transparency), RGBA, LA, PA, CMYK, YCbCr, 1, L; alpha is
  composited over white. 16-bit grayscale (``I;16*``) maps 0..65535 to 0..255 (value / 257);
  mode ``I`` is read the same way when its values lie in 0..65535; mode ``F`` is read as 0..1 or
  0..255 when its values lie in one of those ranges; anything else is stretched min..max.
- The image is resized directly to ``size`` (no aspect-preserving crop, like Keras
  ``load_img(target_size=...)``) with Pillow's bilinear filter, i.e.
  ``Image.resize((width, height), Image.BILINEAR)`` semantics. By default two speed-ups are
  used: JPEGs at least twice the target are decoded at 1/2, 1/4 or 1/8 scale by libjpeg (draft
  mode; the drafted size never drops below the target), and large reductions first shrink by an
  integer factor (``reducing_gap=3``). ``exact=True`` turns both off and reproduces
  ``Image.open(p).convert("RGB").resize(size, Image.BILINEAR)`` for plain RGB images.
- Truncated files are rejected (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set).
- The budget is counted in bytes: ``max_pixels`` is the limit for 8-bit photos, and 16-bit and
  32-bit one-channel images (which take several times the memory to decode) get proportionally
  fewer pixels. A JPEG with more than ``MAX_JPEG_SCANS`` scans is rejected before decoding.

Every problem with the data becomes a ``Rejection``; only bad arguments (``ValueError``) and
programming errors propagate. A rejection of the bytes themselves is permanent; one that may
pass with the same bytes (a read error, memory) has ``retry=True``.
"""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from vasrch.hashing import read_bounded

#: File extensions (lower-case, with the leading dot, as ``Path.suffix.lower()`` gives them)
#: that a catalog scan treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tiff", ".tif", ".webp"}
)

#: Pillow format names that are decoded (JPEG includes the multi-picture MPO files of cameras).
DECODABLE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS
#: Progressive JPEG scans decoded at most: encoders write about 10 (libjpeg's default script)
#: to a few dozen; thousands of tiny scans make libjpeg work for minutes on one image.
MAX_JPEG_SCANS = 100
#: Working bytes a stored pixel costs while decoding, by Pillow mode: `max_pixels` is the
#: budget of an 8-bit photo (4 bytes a pixel in Pillow), and deeper modes get fewer pixels.
_BYTES_PER_PIXEL = {"F": 12, "I": 12, "I;16": 10, "I;16L": 10, "I;16B": 10, "I;16N": 10}
_PHOTO_BYTES_PER_PIXEL = 4
REDUCING_GAP = 3.0  # Pillow: ">= 3.0 is indistinguishable from fair resampling in most cases"

# Orientation tag value -> the transposition that shows the image upright (as exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_GREY16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_TO_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
# What Pillow raises on malformed data (Image.open itself treats the first four as "not this
# format"); anything else is a bug and propagates.
_DATA_ERRORS = (
    SyntaxError,
    IndexError,
    TypeError,
    struct.error,
    OSError,
    ValueError,
    EOFError,
    ZeroDivisionError,
)
_PILLOW_BOMB = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


@dataclass(frozen=True, eq=False)
class Decoded:
    """A decoded image: ``pixels`` is (height, width, 3) uint8 RGB at the requested size;
    ``width``/``height`` are the original size after EXIF rotation."""

    pixels: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class Rejection:
    """Why an input could not be decoded, in a short human sentence. `retry` is True when the
    problem may pass with the same bytes (the file could not be read, memory ran out): such a
    rejection is reported but not remembered, so the next run tries again."""

    reason: str
    retry: bool = False


class _Unsupported(Exception):
    """An image mode this module does not turn into RGB."""


def decode_image(
    data: bytes | str | os.PathLike[str],
    size: int | tuple[int, int] = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    exact: bool = False,
) -> Decoded | Rejection:
    """Decode an image file (path) or its bytes to RGB uint8 of ``size`` (an int for a square,
    or ``(width, height)`` as in PIL), or say why not."""
    target = _target_size(size)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    raw = _read(data)
    if isinstance(raw, Rejection):
        return raw
    if not raw:
        return Rejection("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw), formats=DECODABLE_FORMATS) as im:
            return _decode_opened(im, raw, target, max_pixels, exact)
    except UnidentifiedImageError:
        return Rejection(_unidentified_reason(raw))
    except Image.DecompressionBombError as e:
        return Rejection(_pillow_bomb_reason(str(e), max_pixels))
    except _Unsupported as e:
        return Rejection(f"unsupported mode {e}")
    except MemoryError:
        return Rejection("out of memory while decoding", retry=True)
    except _DATA_ERRORS as e:
        message = str(e) or type(e).__name__
        if isinstance(e, EOFError) or "truncated" in message.lower():
            return Rejection(f"truncated image: {message}")
        return Rejection(f"corrupt image: {type(e).__name__}: {message}")


def declared_pixels(data: bytes) -> int | None:
    """The pixel count an image's header declares, read without decoding a pixel; None when the
    bytes are not an image of a decodable format (decoding then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS) as im:
            return im.size[0] * im.size[1]
    except Image.DecompressionBombError as e:
        match = _PILLOW_BOMB.search(str(e))
        return None if match is None else int(match[1])
    except (UnidentifiedImageError, *_DATA_ERRORS):
        return None


def _target_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return size
    raise ValueError(f"size must be a positive int or a (width, height) tuple, got {size!r}")


def _read(data: bytes | str | os.PathLike[str]) -> bytes | Rejection:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    try:
        return read_bounded(data)
    except OSError as e:
        return Rejection(f"cannot read file: {e.strerror or e}", retry=True)


def _unidentified_reason(raw: bytes) -> str:
    """Name the format when Pillow knows it but vasrch does not decode it."""
    try:
        with Image.open(io.BytesIO(raw)) as other:
            return f"unsupported format: {other.format}"
    except Exception:  # only used to word the reason; the input is rejected either way
        return "not an image: cannot identify image file"


def _pillow_bomb_reason(message: str, max_pixels: int) -> str:
    """Word Pillow's refusal (raised while reading the header) like vasrch's own check."""
    match = _PILLOW_BOMB.search(message)
    if match is None:
        return f"decompression bomb: {message}"
    pixels = int(match[1])
    if pixels > max_pixels:
        return f"decompression bomb: {pixels} pixels > limit {max_pixels}"
    return f"decompression bomb: {pixels} pixels > Pillow's limit {match[2]}"


def jpeg_scans(raw: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds, at most: the header segments are skipped by
    their lengths (an EXIF thumbnail is not counted), then every SOS marker after the first is
    counted (entropy-coded data cannot hold one: its 0xFF bytes are stuffed)."""
    pos = 2
    while pos + 4 <= len(raw) and raw[pos] == 0xFF:
        marker = raw[pos + 1]
        if marker == 0xDA:
            return raw.count(b"\xff\xda", pos)
        if marker == 0xFF:
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
        else:
            pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
    return 0


def _decode_opened(
    im: Image.Image, raw: bytes, target: tuple[int, int], max_pixels: int, exact: bool
) -> Decoded | Rejection:
    stored_w, stored_h = im.size
    if stored_w < 1 or stored_h < 1:
        return Rejection(f"empty image ({stored_w}x{stored_h} pixels)")
    if stored_w * stored_h > max_pixels:
        return Rejection(
            f"decompression bomb: {stored_w * stored_h} pixels ({stored_w}x{stored_h})"
            f" > limit {max_pixels}"
        )
    cost = _BYTES_PER_PIXEL.get(im.mode, _PHOTO_BYTES_PER_PIXEL)
    if stored_w * stored_h * cost > max_pixels * _PHOTO_BYTES_PER_PIXEL:
        return Rejection(
            f"decompression bomb: {stored_w}x{stored_h} pixels of mode {im.mode} need"
            f" {cost} bytes each to decode; limit {max_pixels * _PHOTO_BYTES_PER_PIXEL // cost}"
            " such pixels"
        )
    if im.format in ("JPEG", "MPO") and (scans := jpeg_scans(raw)) > MAX_JPEG_SCANS:
        return Rejection(f"too many JPEG scans: {scans} > limit {MAX_JPEG_SCANS}")
    orientation = _orientation(im)
    swap = orientation in _SWAPS_AXES
    # Resize in the stored orientation, then rotate the small result.
    stored_target = (target[1], target[0]) if swap else target
    box = None
    if not exact and im.format in ("JPEG", "MPO"):
        drafted = im.draft(im.mode, stored_target)
        if drafted is not None:
            box = drafted[1]
    im.load()
    resizable = _resizable(im)
    if resizable.size != stored_target:
        resizable = resizable.resize(
            stored_target,
            Image.Resampling.BILINEAR,
            box=box,
            reducing_gap=None if exact else REDUCING_GAP,
        )
    if orientation in _ORIENTATION_TRANSPOSE:
        resizable = resizable.transpose(_ORIENTATION_TRANSPOSE[orientation])
    width, height = (stored_h, stored_w) if swap else (stored_w, stored_h)
    return Decoded(pixels=_to_rgb_array(resizable), width=width, height=height)


def _orientation(im: Image.Image) -> int:
    value = im.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def _resizable(im: Image.Image) -> Image.Image:
    """Convert to a mode Pillow resizes at full precision: L, RGB, LA, RGBA, or F in 0..255."""
    mode = im.mode
    if mode in _GREY16_MODES or mode in ("I", "F"):
        return Image.fromarray(_grey_to_255(np.asarray(im), mode), mode="F")
    if mode in ("LA", "RGBA"):
        return im
    if mode in ("PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        return im.convert("RGBA")
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode == "P" or mode in _TO_RGB_MODES:
        return im.convert("RGB")
    raise _Unsupported(mode)


def _grey_to_255(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale one-channel high-depth values to float32 0..255 (see the module docstring)."""
    v = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0, copy=False)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if mode in _GREY16_MODES or (mode == "I" and lo >= 0 and hi <= 65535):
        v /= 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        v *= 255.0
    elif mode == "F" and lo >= 0 and hi <= 255:
        pass
    elif hi == lo:
        v[:] = 0.0
    else:
        v -= lo
        v *= 255.0 / (hi - lo)
    return v


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """(h, w, 3) uint8 RGB from an L, RGB, LA, RGBA or F image; alpha composited over white."""
    arr = np.asarray(im)
    if im.mode in ("LA", "RGBA"):
        alpha = arr[..., -1:].astype(np.float32) / 255.0
        arr = arr[..., :-1].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return arr if arr.flags.writeable else arr.copy()
