"""The offline demo catalog: product-like pictures drawn with PIL, one sub-folder per class.

Each image is a function of (seed, class, index, size) alone, so a catalog is byte-for-byte
reproducible and an interrupted generation can be completed later. Classes differ in silhouette
and in colour palette; within a class, images vary in colour, scale, position, rotation,
background tint, fill pattern (plain, stripes, dots) and noise. Every third image is a PNG, the
rest are JPEGs. A hidden marker file, written last, records the parameters of a complete catalog.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vasrch.errors import DataError

CLASSES: tuple[str, ...] = ("tshirt", "trousers", "shoe", "hat", "bag", "mug", "bottle", "watch")
MARKER = ".vasrch-demo"
_VERSION = 1
_SUPERSAMPLE = 2

# Shapes in unit coordinates (x right, y down, the object fills about [0, 1]^2):
# ("polygon", points) | ("ellipse", box) | ("rect", box) | ("ring", box, width)
# | ("line", points, width) | ("arc", box, start, end, width).
# The body is filled with the product colour and pattern; details are (shape, colour role).
_Shape = tuple
# fmt: off
_BODIES: dict[str, list[_Shape]] = {
    "tshirt": [("polygon", [(0.36, 0.12), (0.44, 0.12), (0.5, 0.18), (0.56, 0.12), (0.64, 0.12),
                            (0.92, 0.28), (0.84, 0.44), (0.74, 0.38), (0.74, 0.9), (0.26, 0.9),
                            (0.26, 0.38), (0.16, 0.44), (0.08, 0.28)])],
    "trousers": [("polygon", [(0.3, 0.06), (0.7, 0.06), (0.77, 0.94), (0.56, 0.94), (0.5, 0.36),
                              (0.44, 0.94), (0.23, 0.94)])],
    "shoe": [("polygon", [(0.08, 0.76), (0.1, 0.5), (0.18, 0.42), (0.32, 0.44), (0.42, 0.52),
                          (0.62, 0.58), (0.86, 0.62), (0.93, 0.7), (0.92, 0.76)])],
    "hat": [("polygon", [(0.26, 0.62), (0.3, 0.34), (0.4, 0.26), (0.6, 0.26), (0.7, 0.34),
                         (0.74, 0.62)]),
            ("ellipse", (0.06, 0.56, 0.94, 0.74))],
    "bag": [("polygon", [(0.16, 0.42), (0.84, 0.42), (0.9, 0.9), (0.1, 0.9)])],
    "mug": [("rect", (0.22, 0.24, 0.66, 0.86)), ("ring", (0.58, 0.36, 0.86, 0.72), 0.06)],
    "bottle": [("rect", (0.36, 0.38, 0.64, 0.94)),
               ("polygon", [(0.36, 0.4), (0.45, 0.22), (0.55, 0.22), (0.64, 0.4)]),
               ("rect", (0.45, 0.12, 0.55, 0.24))],
    "watch": [("rect", (0.4, 0.0, 0.6, 1.0))],
}
_DETAILS: dict[str, list[tuple[_Shape, str]]] = {
    "tshirt": [(("line", [(0.44, 0.12), (0.5, 0.18), (0.56, 0.12)], 0.02), "dark")],
    "trousers": [(("rect", (0.3, 0.06, 0.7, 0.12)), "dark"),
                 (("line", [(0.5, 0.12), (0.5, 0.3)], 0.01), "dark")],
    "shoe": [(("rect", (0.06, 0.74, 0.94, 0.83)), "contrast"),
             (("line", [(0.34, 0.47), (0.38, 0.53)], 0.015), "contrast"),
             (("line", [(0.4, 0.5), (0.44, 0.56)], 0.015), "contrast")],
    "hat": [(("rect", (0.27, 0.52, 0.73, 0.6)), "dark")],
    "bag": [(("arc", (0.3, 0.16, 0.7, 0.68), 180, 360, 0.04), "dark"),
            (("rect", (0.45, 0.5, 0.55, 0.58)), "metal")],
    "mug": [(("ellipse", (0.22, 0.2, 0.66, 0.29)), "dark")],
    "bottle": [(("rect", (0.435, 0.06, 0.565, 0.14)), "dark"),
               (("rect", (0.36, 0.56, 0.64, 0.76)), "light")],
    "watch": [(("ellipse", (0.26, 0.26, 0.74, 0.74)), "metal"),
              (("ellipse", (0.32, 0.32, 0.68, 0.68)), "light"),
              (("line", [(0.5, 0.5), (0.5, 0.36)], 0.02), "dark"),
              (("line", [(0.5, 0.5), (0.6, 0.55)], 0.02), "dark"),
              (("rect", (0.73, 0.47, 0.78, 0.53)), "metal")],
}
_PALETTES: dict[str, list[tuple[int, int, int]]] = {
    "tshirt": [(210, 40, 40), (240, 140, 30), (235, 205, 50), (60, 170, 80), (30, 160, 160),
               (130, 60, 170), (230, 110, 170), (40, 80, 200)],
    "trousers": [(40, 70, 130), (30, 40, 80), (190, 170, 120), (45, 45, 50), (110, 110, 115),
                 (100, 110, 60)],
    "shoe": [(235, 235, 235), (35, 35, 35), (120, 70, 35), (190, 30, 30), (200, 150, 90)],
    "hat": [(210, 190, 150), (110, 75, 45), (40, 40, 40), (35, 45, 90), (130, 130, 130)],
    "bag": [(130, 80, 40), (190, 140, 80), (35, 35, 35), (120, 20, 40), (180, 130, 70)],
    "mug": [(245, 245, 240), (240, 230, 200), (170, 200, 230), (180, 220, 180), (240, 190, 200)],
    "bottle": [(40, 140, 70), (50, 110, 200), (100, 200, 210), (190, 120, 30), (170, 175, 180)],
    "watch": [(90, 55, 30), (30, 30, 30), (120, 80, 50), (60, 60, 70)],
}
# fmt: on
_METALS = [(200, 200, 205), (210, 175, 80), (60, 60, 65)]


def demo_image_paths(folder: Path, per_class: int) -> list[Path]:
    """The files a complete demo catalog with ``per_class`` images per class consists of."""
    return [
        Path(folder) / name / f"{name}_{i:03d}.{'png' if i % 3 == 0 else 'jpg'}"
        for name in CLASSES
        for i in range(per_class)
    ]


def generate_demo_catalog(folder: Path, per_class: int = 40, seed: int = 0, size: int = 256) -> int:
    """Draw the demo catalog into ``folder`` unless it is already complete; return its count."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    folder = Path(folder)
    paths = demo_image_paths(folder, per_class)
    params = {
        "generator": "vasrch.catalog.demo",
        "version": _VERSION,
        "classes": list(CLASSES),
        "per_class": per_class,
        "seed": seed,
        "size": size,
        "count": len(paths),
    }
    recorded = _read_marker(folder / MARKER)
    if recorded is not None and recorded != params:
        raise DataError(
            f"{folder} already holds a demo catalog made with {recorded}; call again with the"
            " same parameters, or delete the folder (or choose another) for a new one"
        )
    if recorded is None:
        _refuse_foreign_files(folder, paths)
    for index, path in enumerate(paths):
        if recorded is None or not path.exists():
            cls, i = divmod(index, per_class)
            image = draw_product(CLASSES[cls], np.random.default_rng([seed, cls, i]), size)
            _write_atomic(path, _encode(image, path.suffix))
    if recorded is None:
        _write_atomic(folder / MARKER, (json.dumps(params, indent=2) + "\n").encode())
    return len(paths)


def draw_product(name: str, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """One product picture of class ``name`` (see ``CLASSES``), varied by ``rng``."""
    canvas = size * _SUPERSAMPLE
    colour = _jitter(_choice(rng, _PALETTES[name]), rng, 18)
    roles = {
        "dark": _mix(colour, (20, 20, 20), 0.6),
        "light": _mix(colour, (250, 250, 250), 0.75),
        "contrast": (30, 30, 30) if sum(colour) > 380 else (235, 235, 230),
        "metal": _choice(rng, _METALS),
    }
    scale = canvas * rng.uniform(0.72, 0.95)
    cx, cy = canvas / 2 + rng.uniform(-0.06, 0.06, 2) * canvas
    angle = np.radians(rng.uniform(-12, 12))
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale

    def to_canvas(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        """Unit coordinates -> canvas: scale and rotate about the object's centre, then move."""
        return [
            (cx + (x - 0.5) * cos - (y - 0.5) * sin, cy + (x - 0.5) * sin + (y - 0.5) * cos)
            for x, y in points
        ]

    mask = Image.new("L", (canvas, canvas), 0)
    for shape in _BODIES[name]:
        _draw_shape(ImageDraw.Draw(mask), shape, to_canvas, scale, 255)
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    layer.paste(_pattern(rng, colour, canvas), (0, 0), mask)
    draw = ImageDraw.Draw(layer)
    for shape, role in _DETAILS[name]:
        _draw_shape(draw, shape, to_canvas, scale, (*roles[role], 255))
    tint = tuple(int(c) for c in rng.integers(215, 256, 3))
    picture = Image.alpha_composite(Image.new("RGBA", (canvas, canvas), (*tint, 255)), layer)
    small = np.asarray(picture.convert("RGB").reduce(_SUPERSAMPLE), dtype=np.int16)
    noise = rng.integers(-6, 7, small.shape, dtype=np.int16) * rng.uniform(0.3, 1.0)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: _Shape, to_canvas, scale: float, fill) -> None:
    """Draw one unit-coordinate shape; every shape becomes points, so rotation is exact."""
    kind = shape[0]
    if kind == "polygon":
        draw.polygon(to_canvas(shape[1]), fill=fill)
    elif kind == "rect":
        x0, y0, x1, y1 = shape[1]
        draw.polygon(to_canvas([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]), fill=fill)
    elif kind == "ellipse":
        draw.polygon(to_canvas(_ellipse_points(shape[1])), fill=fill)
    else:  # stroked: line, ring, arc; the stroke width is the last element
        if kind == "line":
            points = shape[1]
        elif kind == "ring":
            points = _ellipse_points(shape[1])
        else:
            points = _ellipse_points(shape[1], shape[2], shape[3])
        width = max(1, round(shape[-1] * scale))
        draw.line(to_canvas(points), fill=fill, width=width, joint="curve")


def _ellipse_points(
    box: tuple[float, float, float, float], start: float = 0, end: float = 360, n: int = 64
) -> list[tuple[float, float]]:
    """Points along the ellipse inscribed in ``box`` from angle ``start`` to ``end`` (degrees,
    clockwise from 3 o'clock, as PIL's arc)."""
    x0, y0, x1, y1 = box
    t = np.radians(np.linspace(start, end, n))
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))


def _pattern(rng: np.random.Generator, colour: tuple[int, int, int], canvas: int) -> Image.Image:
    """The body fill: plain (half the time), stripes or dots in a lighter or darker shade."""
    image = Image.new("RGB", (canvas, canvas), colour)
    kind = rng.choice(["plain", "plain", "stripes", "dots"])
    if kind == "plain":
        return image
    second = _mix(colour, (250, 250, 250) if sum(colour) < 380 else (20, 20, 20), 0.55)
    period = int(rng.integers(canvas // 24, canvas // 10))
    draw = ImageDraw.Draw(image)
    if kind == "stripes":
        slant = int(rng.choice([0, canvas // 2]))  # horizontal or diagonal
        for y in range(-canvas, 2 * canvas, period):
            draw.line([(0, y), (canvas, y + slant)], fill=second, width=max(1, period // 3))
    else:
        radius = period // 4
        for y in range(0, canvas, period):
            for x in range((y // period % 2) * period // 2, canvas, period):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=second)
    return image


def _choice(rng: np.random.Generator, options: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    return options[int(rng.integers(len(options)))]


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _encode(image: Image.Image, suffix: str) -> bytes:
    buf = io.BytesIO()
    if suffix == ".png":
        image.save(buf, "PNG", compress_level=3)
    else:
        image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_marker(marker: Path) -> dict | None:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _refuse_foreign_files(folder: Path, paths: list[Path]) -> None:
    """Never draw the demo into a folder that holds other (non-hidden) files."""
    if not folder.is_dir():
        return
    expected = set(paths)
    foreign = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p not in expected and not p.name.startswith(".")
    ]
    if foreign:
        raise DataError(
            f"{folder} holds files that are not part of a demo catalog (e.g. {foreign[0]});"
            " choose an empty or new folder for the demo catalog"
        )
