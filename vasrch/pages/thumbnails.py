"""Small JPEG thumbnails of catalog images for the HTML pages, in a ``thumbs/`` folder, and
the full images they link to, in an ``images/`` folder beside it.

Each thumbnail is named by a hash of its image id, so any id gives a safe, stable file name; an
image without a path or whose file does not decode is shown as one shared grey placeholder. Its
full image is ``images/<the same hash><suffix>``: a symlink to the catalog file (or a copy, for
query images that may live anywhere), so the page's relative link opens the picture wherever the
page is shown: from disk, through the workspace file server (which serves symlinks into the
catalog folder and nowhere else), and from a copy of the folder (``cp -r`` keeps the symlinks,
copies that follow them take the few images shown). A photo read from a URL links that URL.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vasrch.addresses import is_url
from vasrch.atomic_files import atomic_path
from vasrch.catalog.images import DECODABLE_FORMATS, Decoded, decode_image
from vasrch.catalog.scan import DEFAULT_MAX_FILE_BYTES
from vasrch.catalog.sources import Fetching, read_photo

THUMBS_DIR = "thumbs"
FULL_IMAGES_DIR = "images"
PLACEHOLDER_NAME = "placeholder.jpg"
THUMB_SIZE = 128  # longest side, in pixels
THUMB_QUALITY = 80
_PLACEHOLDER_GREY = (190, 190, 190)
_EXIF_ORIENTATION = 0x0112
_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")
_ORIENTATIONS_SWAPPING_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class Thumb:
    """A thumbnail in a page's folder: ``src`` is relative to it; ``href`` links the full image in
    the folder's ``images/`` (None for the placeholder); ``problem`` says why the
    grey placeholder is shown instead of the image (None when the image decoded)."""

    src: str
    width: int
    height: int
    problem: str | None = None
    href: str | None = None


def write_thumbnails(
    image_ids: Iterable[str],
    paths: Mapping[str, str],
    out_dir: Path,
    workers: int | None = None,
    copied: Collection[str] = (),
    fetching: Fetching | None = None,
) -> dict[str, Thumb]:
    """Write a JPEG thumbnail per distinct id into ``out_dir/thumbs`` in a thread pool, and its
    full image into ``out_dir/images`` (a symlink to the file; a copy for the ids in `copied`;
    nothing for a photo at a URL, which is linked as it is; photos at URLs are read as
    `fetching` says); an id without a path or whose file does not decode gets the shared grey
    placeholder."""
    ids = list(dict.fromkeys(image_ids))
    out_dir = Path(out_dir)
    for folder in (THUMBS_DIR, FULL_IMAGES_DIR):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    copies = frozenset(copied)
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = list(
            pool.map(lambda i: _thumbnail(i, paths.get(i), out_dir, i in copies, fetching), ids)
        )
    if any(thumb.problem is not None for thumb in made):
        with atomic_path(out_dir / THUMBS_DIR / PLACEHOLDER_NAME) as tmp:
            placeholder = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), _PLACEHOLDER_GREY)
            placeholder.save(tmp, "JPEG", quality=THUMB_QUALITY)
    return dict(zip(ids, made, strict=True))


def thumb_name(image_id: str) -> str:
    """The thumbnail's file name: a hash of the id, so any id gives a safe, stable name."""
    return _stem(image_id) + ".jpg"


def full_image_name(image_id: str, path: str) -> str:
    """The full image's file name in ``images/``: the id's hash and the file's suffix (when it
    is a plain one, so that a browser knows the type)."""
    suffix = Path(path).suffix.lower()
    return _stem(image_id) + (suffix if _SUFFIX.fullmatch(suffix) else "")


def _stem(image_id: str) -> str:
    return hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:24]


def _thumbnail(
    image_id: str, path: str | None, out_dir: Path, copy: bool, fetching: Fetching | None
) -> Thumb:
    if path is None:
        return _placeholder("no path known for this image")
    try:
        raw = read_photo(path, DEFAULT_MAX_FILE_BYTES, fetching)
    except OSError as e:
        return _placeholder(f"cannot read file: {e.strerror or e}")
    decoded = decode_image(raw, _thumb_target(raw))
    if not isinstance(decoded, Decoded):
        return _placeholder(decoded.reason)
    name = thumb_name(image_id)
    with atomic_path(out_dir / THUMBS_DIR / name) as tmp:
        Image.fromarray(decoded.pixels).save(tmp, "JPEG", quality=THUMB_QUALITY, optimize=True)
    height, width = decoded.pixels.shape[:2]
    if is_url(path):
        href = path
    else:
        href = f"{FULL_IMAGES_DIR}/{full_image_name(image_id, path)}"
        with atomic_path(out_dir / href) as tmp:
            if copy:
                tmp.write_bytes(raw)
            else:
                os.symlink(Path(path).resolve(), tmp)
    return Thumb(src=f"{THUMBS_DIR}/{name}", width=width, height=height, href=href)


def _placeholder(problem: str) -> Thumb:
    return Thumb(f"{THUMBS_DIR}/{PLACEHOLDER_NAME}", THUMB_SIZE, THUMB_SIZE, problem)


def _thumb_target(raw: bytes) -> tuple[int, int]:
    """Thumbnail size (longest side THUMB_SIZE, never enlarged, upright) from the header alone."""
    try:
        with Image.open(io.BytesIO(raw), formats=DECODABLE_FORMATS) as im:
            width, height = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in _ORIENTATIONS_SWAPPING_AXES:
                width, height = height, width
    except Exception:  # only picks a size; decode_image then says what is wrong with the file
        return THUMB_SIZE, THUMB_SIZE
    scale = min(1.0, THUMB_SIZE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))
