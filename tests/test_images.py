import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tests.imagefactory import (
    BLUE,
    GOOD_KINDS,
    RED,
    write_bad_images,
    write_good_images,
    write_large_jpeg,
    write_oriented_jpeg,
    write_png_declaring,
)
from vasrch.catalog.images import (
    IMAGE_EXTENSIONS,
    Decoded,
    Rejection,
    declared_pixels,
    decode_image,
)

DATASET = Path(__file__).parents[2] / "shared" / "datasets" / "clothing-small"


def decoded(result: Decoded | Rejection) -> Decoded:
    assert isinstance(result, Decoded), result
    return result


def near(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tol))


def test_catalog_scan_takes_image_names_in_any_case_and_skips_the_rest(tmp_path):
    from vasrch.catalog.scan import iter_image_files

    images = write_good_images(tmp_path / "src", 2 * len(GOOD_KINDS), seed=2)
    wanted = set()
    for i, path in enumerate(images):
        suffix = path.suffix.upper() if i % 2 else path.suffix.title()
        wanted.add(path.rename(tmp_path / f"{path.stem}{suffix}").name)
    (tmp_path / ".hidden.jpg").write_bytes((tmp_path / sorted(wanted)[0]).read_bytes())
    for name in ("notes.txt", "a.jpg.bak", "jpg", "b.svg"):
        (tmp_path / name).write_bytes(b"x")
    assert {p.name for p in iter_image_files(tmp_path)} == wanted


@pytest.mark.parametrize("kind", list(GOOD_KINDS))
def test_every_good_kind_decodes_to_224_rgb(tmp_path, kind):
    path = GOOD_KINDS[kind](tmp_path / kind, np.random.default_rng(3))
    result = decoded(decode_image(path))
    assert result.pixels.shape == (224, 224, 3)
    assert result.pixels.dtype == np.uint8
    assert result.pixels.std() > 5  # a picture, not a blank
    with Image.open(path) as im:
        stored = im.size
    assert {result.width, result.height} == set(stored)


def test_good_images_cover_every_kind_and_bytes_equal_paths(tmp_path):
    paths = write_good_images(tmp_path, 2 * len(GOOD_KINDS), seed=1)
    assert len(paths) == len(set(paths)) == 2 * len(GOOD_KINDS)
    assert {p.suffix for p in paths} == IMAGE_EXTENSIONS
    for path in paths:
        from_path = decoded(decode_image(path))
        from_bytes = decoded(decode_image(path.read_bytes()))
        assert np.array_equal(from_path.pixels, from_bytes.pixels)


def test_every_bad_file_is_rejected_with_its_reason(tmp_path):
    expected = write_bad_images(tmp_path)
    assert len(expected) >= 10
    for path, fragment in expected.items():
        result = decode_image(path)
        assert isinstance(result, Rejection), path.name
        assert fragment in result.reason, (path.name, result.reason)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bomb_reason_names_pixels_and_limit(tmp_path):
    bombs = [p for p in write_bad_images(tmp_path) if p.name == "bomb.png"]
    result = decode_image(bombs[0])
    assert result == Rejection("decompression bomb: 400000000 pixels > limit 89478485")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_limit_is_checked_from_the_header_before_decoding(tmp_path):
    # 100 M pixels: over vasrch's limit but under Pillow's own hard limit, so only vasrch's
    # check can reject it; the file holds one real pixel, so decoding would report truncation.
    path = write_png_declaring(tmp_path / "liar.png", 10_000, 10_000)
    result = decode_image(path)
    assert result == Rejection(
        "decompression bomb: 100000000 pixels (10000x10000) > limit 89478485"
    )


def test_max_pixels_is_the_callers_limit(tmp_path):
    path = GOOD_KINDS["png"](tmp_path / "p", np.random.default_rng(0))
    with Image.open(path) as im:
        pixels = im.width * im.height
    assert isinstance(decode_image(path, max_pixels=pixels), Decoded)
    rejected = decode_image(path, max_pixels=pixels - 1)
    assert isinstance(rejected, Rejection)
    assert rejected.reason.startswith(f"decompression bomb: {pixels} pixels")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_declared_pixels_reads_only_the_header(tmp_path):
    liar = write_png_declaring(tmp_path / "liar.png", 10_000, 9_000).read_bytes()
    bomb = next(p for p in write_bad_images(tmp_path / "bad") if p.name == "bomb.png")
    assert declared_pixels(liar) == 90_000_000
    assert declared_pixels(bomb.read_bytes()) == 400_000_000  # past Pillow's own hard limit
    assert declared_pixels(b"not an image") is None
    assert declared_pixels(b"") is None


def test_unreadable_paths_are_rejections(tmp_path):
    assert "cannot read file" in decode_image(tmp_path / "missing.jpg").reason
    assert "cannot read file" in decode_image(tmp_path).reason


@pytest.mark.parametrize("size", [0, -3, (224,), (224, 0), "224", True, 224.0])
def test_bad_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="size"):
        decode_image(b"irrelevant", size)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_puts_the_red_block_top_left(tmp_path, orientation):
    path = write_oriented_jpeg(tmp_path / f"o{orientation}.jpg", orientation, 120, 80)
    with Image.open(path) as im:
        assert im.size == ((80, 120) if orientation >= 5 else (120, 80))
    result = decoded(decode_image(path))
    assert (result.width, result.height) == (120, 80)
    px = result.pixels
    assert near(px[56, 56], RED)
    assert near(px[56, 168], BLUE) and near(px[168, 56], BLUE) and near(px[168, 168], BLUE)


def test_non_square_size_is_width_height(tmp_path):
    path = write_oriented_jpeg(tmp_path / "o6.jpg", 6, 120, 80)
    px = decoded(decode_image(path, (100, 50))).pixels
    assert px.shape == (50, 100, 3)
    assert near(px[12, 25], RED) and near(px[37, 75], BLUE)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)  # black everywhere
    rgba[:, 20:40, 3] = 128  # half-transparent middle third
    rgba[:, 40:, 3] = 255  # opaque black right third
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    px = decoded(decode_image(tmp_path / "a.png", (60, 40))).pixels
    assert np.all(px[:, :18] == 255)
    assert np.all(np.abs(px[:, 22:38].astype(int) - 127) <= 1)
    assert np.all(px[:, 42:] == 0)
    for kind in ("gif_transparent", "png_palette_transparent", "png_rgba", "png_la"):
        # the factory makes the left third fully transparent over black or coloured pixels
        path = GOOD_KINDS[kind](tmp_path / kind, np.random.default_rng(5))
        assert np.all(decoded(decode_image(path)).pixels[:, :60] == 255), kind


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.zeros((30, 90), np.uint16)
    values[:, 30:60] = 30_000
    values[:, 60:] = 65_535
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
    px = decoded(decode_image(tmp_path / "g16.png", (90, 30))).pixels
    assert px[15, 15].tolist() == [0, 0, 0]
    assert px[15, 45].tolist() == [117, 117, 117]  # 30000 / 257, not 255
    assert px[15, 75].tolist() == [255, 255, 255]


def test_32_bit_int_and_float_grey(tmp_path):
    ints = np.zeros((20, 40), np.int32)
    ints[:, 20:] = 51_400  # 16-bit data held in a 32-bit image: 51400 / 257 = 200
    Image.fromarray(ints, "I").save(tmp_path / "i.tiff")
    px = decoded(decode_image(tmp_path / "i.tiff", (40, 20))).pixels
    assert px[10, 5, 0] == 0 and px[10, 35, 0] == 200
    floats = np.full((20, 40), 0.5, np.float32)
    Image.fromarray(floats, "F").save(tmp_path / "f.tiff")
    assert np.all(decoded(decode_image(tmp_path / "f.tiff", (40, 20))).pixels == 128)


@pytest.mark.parametrize("fmt,suffix", [("GIF", ".gif"), ("WEBP", ".webp"), ("TIFF", ".tif")])
def test_animation_gives_its_first_frame(tmp_path, fmt, suffix):
    frames = [Image.new("RGB", (50, 50), c) for c in (RED, (0, 255, 0), BLUE)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(path) as im:
        assert im.n_frames == 3
    px = decoded(decode_image(path)).pixels
    assert near(px.reshape(-1, 3).mean(axis=0), RED, tol=3)


def test_cmyk_grey_and_bilevel_become_rgb(tmp_path):
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert near(decoded(decode_image(tmp_path / "c.jpg")).pixels[100, 100], RED, tol=4)
    for kind in ("png_grey", "png_1bit", "png_16bit"):
        px = decoded(decode_image(GOOD_KINDS[kind](tmp_path / kind, np.random.default_rng(2))))
        assert np.array_equal(px.pixels[..., 0], px.pixels[..., 1])
        assert np.array_equal(px.pixels[..., 0], px.pixels[..., 2])


def test_exact_is_pil_bilinear_resize(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.png")
    with Image.open(tmp_path / "big.png") as im:
        reference = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.array_equal(decoded(decode_image(tmp_path / "big.png", exact=True)).pixels, reference)
    fast = decoded(decode_image(tmp_path / "big.png")).pixels  # reducing_gap: close, not equal
    assert np.abs(fast.astype(int) - reference).mean() < 2


def test_draft_decode_is_close_to_full_decode(tmp_path):
    path = write_large_jpeg(tmp_path / "big.jpg", 3000, 3000)
    timings = {}
    results = {}
    for exact in (False, True):
        start = time.perf_counter()
        results[exact] = decoded(decode_image(path, exact=exact))
        timings[exact] = time.perf_counter() - start
    print(f"3000x3000 JPEG: draft {timings[False] * 1e3:.0f} ms, full {timings[True] * 1e3:.0f} ms")
    diff = np.abs(results[False].pixels.astype(int) - results[True].pixels)
    assert diff.mean() < 1.5
    assert (results[False].width, results[False].height) == (3000, 3000)


def test_draft_respects_exif_rotation(tmp_path):
    # stored 2400x1200 rotated, shown 1200x2400; the target (150, 300) is drafted at 1/8
    path = write_oriented_jpeg(tmp_path / "tall.jpg", 6, 1200, 2400)
    fast = decoded(decode_image(path, (150, 300)))
    full = decoded(decode_image(path, (150, 300), exact=True))
    assert (fast.width, fast.height) == (1200, 2400)
    assert fast.pixels.shape == (300, 150, 3)
    assert near(fast.pixels[75, 37], RED) and near(fast.pixels[225, 112], BLUE)
    assert np.abs(fast.pixels.astype(int) - full.pixels).mean() < 1.5


@pytest.mark.realdata
def test_clothing_small_photos_all_decode():
    if not DATASET.is_dir():
        pytest.skip(f"{DATASET} is absent")
    paths = sorted(p for p in DATASET.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:300]
    assert paths
    start = time.perf_counter()
    results = [decode_image(p) for p in paths]
    per_image = (time.perf_counter() - start) / len(paths)
    print(f"clothing-small: {per_image * 1e3:.2f} ms per image (read + decode + resize)")
    assert all(isinstance(r, Decoded) and r.pixels.shape == (224, 224, 3) for r in results)
