"""Duplicate prints on drawn photos: listing edits score high, other photos low.

Drawn photos with flat colours are harsher than real ones (a brighter flat colour clips, a text
overlay covers a larger share of the detail), so these tests check the separation; the default
threshold is checked on real photos (test_duplicates_realdata.py, benchmarks/bench_duplicates.py).
"""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.listing_edits import EDITS, edited_jpeg
from vasrch.catalog.images import decode_image
from vasrch.config import BulkConfig
from vasrch.features.duplicate_prints import (
    BOXES,
    MIRROR,
    PIXELS,
    PRINT_BYTES,
    SIDE,
    SQUARE,
    WINDOWS,
    make_print,
    prepare,
)
from vasrch.features.print_similarity import print_scores

THRESHOLD = BulkConfig().duplicate_threshold


def photo(seed: int, width: int = 300, height: int = 400) -> Image.Image:
    """A product-like photo: a shaded background and a few soft shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(60, 200, 3)
    shade = (x / width * rng.integers(-40, 40) + y / height * rng.integers(-40, 40))[..., None]
    img = Image.fromarray(np.clip(base + shade, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 80)), int(rng.integers(0, height - 80))
        w, h = int(rng.integers(40, 160)), int(rng.integers(40, 160))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
    return img


def print_of(data: bytes) -> np.ndarray:
    decoded = decode_image(data, 224)
    return make_print(decoded.pixels, decoded.width, decoded.height)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def scores(prints: list[np.ndarray], pairs: list[tuple[int, int]]) -> np.ndarray:
    a, b = np.array(pairs).T
    return print_scores(prepare(np.stack(prints)), a, b)


def test_a_print_is_small_and_deterministic():
    data = jpeg(photo(0))
    first = print_of(data)
    assert first.shape == (PRINT_BYTES,) and first.dtype == np.uint8
    assert first.nbytes < 3_500
    np.testing.assert_array_equal(first, print_of(data))


@pytest.mark.parametrize("size", [(300, 400), (400, 300), (224, 224)])
def test_windows_are_the_area_averages_of_their_boxes(size):
    """Made from one reduced copy, each window still matches PIL's area resize of its box of the
    decoded photo (the white square: of the photo padded to its shape on white)."""
    decoded = decode_image(jpeg(photo(3, *size)), 224)
    grey = Image.fromarray(decoded.pixels).convert("L")
    made = make_print(decoded.pixels, *size)[: WINDOWS * PIXELS].reshape(WINDOWS, SIDE, SIDE)
    w, h = grey.size
    for i, box in enumerate(BOXES[:SQUARE]):
        crop = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
        expected = np.asarray(grey.resize((SIDE, SIDE), Image.Resampling.BOX, box=crop))
        expected = expected[:, ::-1] if i == MIRROR else expected
        assert np.abs(made[i].astype(int) - expected).mean() < 1.0, i
    longest = max(size)
    content = (round(size[0] * 224 / longest), round(size[1] * 224 / longest))
    square = Image.new("L", (224, 224), 255)
    square.paste(
        grey.resize(content, Image.Resampling.BOX),
        ((224 - content[0]) // 2, (224 - content[1]) // 2),
    )
    expected = np.asarray(square.resize((SIDE, SIDE), Image.Resampling.BOX))
    assert np.abs(made[SQUARE].astype(int) - expected).mean() < 1.0


def test_other_photos_score_far_below_the_threshold_and_identical_ones_score_one():
    prints = [print_of(jpeg(photo(seed))) for seed in range(12)]
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    assert scores(prints, pairs).max() < THRESHOLD - 0.1
    assert scores(prints, [(3, 3)])[0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_every_listing_edit_scores_far_above_other_photos(edit):
    originals = [photo(seed) for seed in range(6)]
    prints = [print_of(jpeg(img)) for img in originals]
    prints += [print_of(edited_jpeg(img, edit)) for img in originals]
    others = [(i, j) for i in range(6) for j in range(6, 12) if j != 6 + i]
    got = scores(prints, [(i, 6 + i) for i in range(6)])
    assert got.min() > scores(prints, others).max() + 0.1, got
    assert np.median(got) >= THRESHOLD


def test_scores_are_symmetric():
    prints = [print_of(jpeg(photo(seed))) for seed in range(4)]
    prints.append(print_of(edited_jpeg(photo(1), "crop-10-each-side")))
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    got = dict(zip(pairs, scores(prints, pairs), strict=True))
    for i, j in pairs:
        assert got[i, j] == pytest.approx(got[j, i], abs=1e-5)


def test_the_same_cut_in_another_colour_is_not_a_duplicate():
    def shirt(colour: tuple[int, int, int]) -> Image.Image:
        img = photo(3)
        ImageDraw.Draw(img).polygon([(60, 80), (240, 80), (220, 330), (80, 330)], fill=colour)
        return img

    # Red and blue of the same grey level: only the colour tells the two shirts apart.
    red, blue = shirt((200, 60, 60)), shirt((40, 110, 210))
    prints = [print_of(jpeg(red)), print_of(jpeg(blue)), print_of(edited_jpeg(red, "jpeg-30"))]
    got = scores(prints, [(0, 1), (0, 2)])
    assert got[0] < THRESHOLD - 0.1 < THRESHOLD <= got[1]
