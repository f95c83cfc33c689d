"""Writers of real image files for tests: every kind of good input, and every kind of bad one.

``write_good_images`` cycles through ``GOOD_KINDS`` (formats, modes, EXIF orientations,
transparency, 16-bit, animations); ``write_bad_images`` writes one file per failure and maps it
to a fragment that its rejection reason must contain.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

# The upright test pattern: red in the top-left quadrant, blue elsewhere.
RED = (255, 0, 0)
BLUE = (0, 0, 255)

# EXIF orientation -> transposition that turns an upright image into the stored one
# (the inverse of what a viewer applies).
_STORE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def picture(rng: np.random.Generator, width: int = 96, height: int = 72) -> Image.Image:
    """A random RGB picture: a tinted background with a few filled shapes."""
    img = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(120, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1 + 1, y1 + 1), fill=fill)
        else:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=fill)
    return img


def upright_pattern(width: int = 120, height: int = 80) -> Image.Image:
    """RGB image with a red top-left quadrant on blue: shows which way up an image is."""
    img = Image.new("RGB", (width, height), BLUE)
    ImageDraw.Draw(img).rectangle((0, 0, width // 2 - 1, height // 2 - 1), fill=RED)
    return img


def write_oriented_jpeg(
    path: Path,
    orientation: int,
    width: int = 120,
    height: int = 80,
    upright: Image.Image | None = None,
) -> Path:
    """A JPEG whose pixels are stored rotated/flipped and whose EXIF orientation tag says how
    to show ``upright`` (default: ``upright_pattern(width, height)``) the right way up."""
    upright = upright if upright is not None else upright_pattern(width, height)
    stored = upright.transpose(_STORE_FOR_ORIENTATION[orientation]) if orientation != 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif)
    return path


def product_shots(image: Image.Image, rng: np.random.Generator) -> list[Image.Image]:
    """Four shots of one product: the photo, a crop, a mirrored recolouring, a smaller copy."""
    w, h = image.size
    c = rng.uniform(0.75, 0.9)
    cw, ch = int(w * c), int(h * c)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    scale = rng.uniform(0.5, 0.8)
    return [
        image,
        image.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h)),
        ImageEnhance.Color(ImageOps.mirror(image)).enhance(rng.uniform(0.6, 1.4)),
        ImageEnhance.Brightness(image.resize((int(w * scale), int(h * scale)))).enhance(
            rng.uniform(0.8, 1.2)
        ),
    ]


def shopper_copy(path: Path) -> bytes:
    """A shopper's copy of a catalog photo: one pixel changed, so not the catalog's bytes (a
    query with a catalog photo's exact bytes leaves that photo's own product out)."""
    with Image.open(path) as image:
        edited = image.convert("RGB")
        fmt = image.format
    edited.putpixel((0, 0), tuple(255 - v for v in edited.getpixel((0, 0))))
    out = io.BytesIO()
    edited.save(out, format=fmt, quality=95)
    return out.getvalue()


def write_png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny 1x1 grayscale PNG whose IHDR (with a valid CRC) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # chunk length at 8, type at 12, payload at 16..29, CRC at 29..33
    assert data[ihdr + 4 : ihdr + 8] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def write_png_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A valid all-black 1-bit PNG of ``width`` x ``height`` that is tiny on disk."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    return _write_flat_png(path, width, height, row, bit_depth=1, colour_type=0)


def write_flat_rgb_png(path: Path, width: int, height: int) -> Path:
    """A valid mid-grey 8-bit RGB PNG of ``width`` x ``height``: small on disk, and decoded in
    full (about 4 bytes a pixel in Pillow), as a big photo would be."""
    row = b"\x00" + b"\x80" * (3 * width)  # filter byte + RGB samples
    return _write_flat_png(path, width, height, row, bit_depth=8, colour_type=2, level=1)


def _write_flat_png(
    path: Path,
    width: int,
    height: int,
    row: bytes,
    bit_depth: int,
    colour_type: int,
    level: int = 9,
) -> Path:
    """A PNG whose every scanline is `row`, compressed as it goes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    packer = zlib.compressobj(level)
    block = row * 256
    parts = [packer.compress(block) for _ in range(height // 256)]
    parts.append(packer.compress(row * (height % 256)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
    return path


def write_large_jpeg(path: Path, width: int = 3000, height: int = 3000, seed: int = 0) -> Path:
    """A big photo-like JPEG: smooth gradients, shapes and a little noise."""
    rng = np.random.default_rng(seed)
    small = np.asarray(picture(rng, 120, 120).resize((width, height), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = (40 * np.sin(xx / 37.0) * np.cos(yy / 53.0))[..., None]
    noise = rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    arr = np.clip(small.astype(np.float32) + shade + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path


def _transparent_palette(rng: np.random.Generator) -> Image.Image:
    """Palette image whose index 0 (black) is transparent and fills the left third."""
    img = Image.new("P", (90, 60), 1)
    colours = [0, 0, 0] + [int(c) for c in rng.integers(0, 256, 3 * 255)]
    img.putpalette(colours)
    ImageDraw.Draw(img).rectangle((0, 0, 29, 59), fill=0)
    ImageDraw.Draw(img).ellipse((40, 10, 80, 50), fill=int(rng.integers(2, 256)))
    img.info["transparency"] = 0
    return img


def _rgba(rng: np.random.Generator) -> Image.Image:
    img = picture(rng).convert("RGBA")
    alpha = np.full((img.height, img.width), 255, np.uint8)
    alpha[:, : img.width // 3] = 0
    img.putalpha(Image.fromarray(alpha))
    return img


def _save(img: Image.Image, path: Path, fmt: str, **params) -> Path:
    img.save(path, fmt, **params)
    return path


def _good_png(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng), path.with_suffix(".png"), "PNG")


def _good_jpg(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng), path.with_suffix(".jpg"), "JPEG", quality=90)


def _good_gif_transparent(path: Path, rng: np.random.Generator) -> Path:
    return _save(_transparent_palette(rng), path.with_suffix(".gif"), "GIF", transparency=0)


def _good_bmp(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng), path.with_suffix(".bmp"), "BMP")


def _good_tiff(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng), path.with_suffix(".tiff"), "TIFF", compression="tiff_deflate")


def _good_webp(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng), path.with_suffix(".webp"), "WEBP", quality=90)


def _good_exif6(path: Path, rng: np.random.Generator) -> Path:
    return write_oriented_jpeg(path.with_suffix(".jpg"), 6, upright=picture(rng))


def _good_exif8(path: Path, rng: np.random.Generator) -> Path:
    return write_oriented_jpeg(path.with_suffix(".jpeg"), 8, upright=picture(rng))


def _good_png_palette(path: Path, rng: np.random.Generator) -> Path:
    return _save(_transparent_palette(rng), path.with_suffix(".png"), "PNG", transparency=0)


def _good_png_rgba(path: Path, rng: np.random.Generator) -> Path:
    return _save(_rgba(rng), path.with_suffix(".png"), "PNG")


def _good_png_la(path: Path, rng: np.random.Generator) -> Path:
    return _save(_rgba(rng).convert("LA"), path.with_suffix(".png"), "PNG")


def _good_jpg_cmyk(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng).convert("CMYK"), path.with_suffix(".jpg"), "JPEG", quality=90)


def _good_png_16bit(path: Path, rng: np.random.Generator) -> Path:
    grey = np.asarray(picture(rng).convert("L"), dtype=np.uint16) * 257
    return _save(Image.fromarray(grey), path.with_suffix(".png"), "PNG")


def _good_png_grey(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng).convert("L"), path.with_suffix(".png"), "PNG")


def _good_png_1bit(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng).convert("1"), path.with_suffix(".png"), "PNG")


def _good_gif_animated(path: Path, rng: np.random.Generator) -> Path:
    frames = [picture(rng) for _ in range(3)]
    return _save(
        frames[0], path.with_suffix(".gif"), "GIF", save_all=True, append_images=frames[1:]
    )


def _good_webp_animated(path: Path, rng: np.random.Generator) -> Path:
    frames = [picture(rng) for _ in range(3)]
    return _save(
        frames[0], path.with_suffix(".webp"), "WEBP", save_all=True, append_images=frames[1:]
    )


def _good_tiff_multipage(path: Path, rng: np.random.Generator) -> Path:
    frames = [picture(rng) for _ in range(2)]
    return _save(
        frames[0], path.with_suffix(".tif"), "TIFF", save_all=True, append_images=frames[1:]
    )


def _good_png_named_jpg(path: Path, rng: np.random.Generator) -> Path:
    return _save(picture(rng), path.with_suffix(".jpg"), "PNG")


GOOD_KINDS: dict[str, Callable[[Path, np.random.Generator], Path]] = {
    "png": _good_png,
    "jpg": _good_jpg,
    "gif_transparent": _good_gif_transparent,
    "bmp": _good_bmp,
    "tiff": _good_tiff,
    "webp": _good_webp,
    "jpg_exif6": _good_exif6,
    "jpeg_exif8": _good_exif8,
    "png_palette_transparent": _good_png_palette,
    "png_rgba": _good_png_rgba,
    "png_la": _good_png_la,
    "jpg_cmyk": _good_jpg_cmyk,
    "png_16bit": _good_png_16bit,
    "png_grey": _good_png_grey,
    "png_1bit": _good_png_1bit,
    "gif_animated": _good_gif_animated,
    "webp_animated": _good_webp_animated,
    "tif_multipage": _good_tiff_multipage,
    "png_named_jpg": _good_png_named_jpg,
}


def write_good_images(folder: Path, n: int = len(GOOD_KINDS), seed: int = 0) -> list[Path]:
    """Write ``n`` decodable images into ``folder``, cycling through ``GOOD_KINDS`` (so any
    ``n >= len(GOOD_KINDS)`` covers every kind); file names start with the kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = list(GOOD_KINDS.items())
    return [
        writer(folder / f"{name}_{i:04d}", rng)
        for i, (name, writer) in ((i, kinds[i % len(kinds)]) for i in range(n))
    ]


def _first_half(fmt: str) -> bytes:
    """The first half of a noisy image file in ``fmt`` (cut inside the pixel data)."""
    arr = np.random.default_rng(1).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    data = buf.getvalue()
    return data[: len(data) // 2]


def write_bad_images(folder: Path) -> dict[Path, str]:
    """Write one undecodable file per failure kind into ``folder``; map each path to a fragment
    of the rejection reason it must get."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    icon = io.BytesIO()
    Image.new("RGB", (32, 32), RED).save(icon, "ICO")
    garbage = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>\n'
    contents = {
        "empty.jpg": (b"", "empty file"),
        "text.png": (b"this is a text file, not a picture\n" * 20, "not an image"),
        "random.bmp": (b"XX" + garbage, "not an image"),
        "drawing.tiff": (svg, "not an image"),
        "icon.tiff": (icon.getvalue(), "unsupported format: ICO"),
        "truncated.jpg": (_first_half("JPEG"), "truncated"),
        "truncated.png": (_first_half("PNG"), "truncated"),
        "truncated.gif": (_first_half("GIF"), "truncated"),
        "truncated.webp": (_first_half("WEBP"), "corrupt"),
    }
    expected = {}
    for name, (data, fragment) in contents.items():
        (folder / name).write_bytes(data)
        expected[folder / name] = fragment
    expected[write_png_bomb(folder / "bomb.png")] = "decompression bomb"
    return expected
