"""Hostile files and rows that must be refused one by one, never crash or stall a command:
scan-bomb JPEGs, deep-pixel images, NUL bytes and repeated headers in a manifest, a planted
lock symlink."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imagefactory import picture
from vasrch.catalog.images import MAX_JPEG_SCANS, Decoded, Rejection, decode_image, jpeg_scans
from vasrch.catalog.product_manifest import ManifestError, load_manifest
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.workspace.lock import WorkspaceBusy, workspace_lock


def _jpeg(progressive: bool, exif: bytes = b"") -> bytes:
    out = io.BytesIO()
    image = picture(np.random.default_rng(3)).resize((256, 256))
    image.save(out, "JPEG", quality=90, progressive=progressive, exif=exif)
    return out.getvalue()


def scan_bomb(scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it holds `scans` scans."""
    data = _jpeg(progressive=True)
    last = data.rindex(b"\xff\xda")
    body, tail = data[last:-2], data[-2:]
    return data[:-2] + body * (scans - jpeg_scans(data)) + tail


def test_jpeg_scans_counts_real_scans_not_marker_bytes_in_headers() -> None:
    assert jpeg_scans(_jpeg(progressive=False)) == 1
    # an EXIF segment whose payload holds SOS marker bytes is skipped by its length
    exif = b"Exif\x00\x00" + b"\xff\xda" * 20
    assert jpeg_scans(_jpeg(progressive=False, exif=exif)) == 1
    assert 2 <= jpeg_scans(_jpeg(progressive=True)) <= 20
    assert jpeg_scans(scan_bomb(3000)) == 3000


def test_a_jpeg_with_thousands_of_scans_is_refused_at_once(tmp_path: Path) -> None:
    assert isinstance(decode_image(_jpeg(progressive=True)), Decoded)
    start = time.monotonic()
    result = decode_image(scan_bomb(5000))
    assert isinstance(result, Rejection) and not result.retry
    assert result.reason == f"too many JPEG scans: 5000 > limit {MAX_JPEG_SCANS}"
    assert time.monotonic() - start < 1.0


def test_deep_pixels_count_against_the_budget_in_bytes(tmp_path: Path) -> None:
    floats = np.full((1000, 2000), 0.5, np.float32)  # 2 MP of mode F: 24 MB to decode
    Image.fromarray(floats, "F").save(tmp_path / "f.tiff")
    Image.new("RGB", (2000, 1000), (9, 9, 9)).save(tmp_path / "rgb.tiff")
    budget = 3_000_000  # pixels of an 8-bit photo
    assert isinstance(decode_image(tmp_path / "rgb.tiff", max_pixels=budget), Decoded)
    refused = decode_image(tmp_path / "f.tiff", max_pixels=budget)
    assert isinstance(refused, Rejection)
    assert "mode F" in refused.reason and "limit 1000000 such pixels" in refused.reason
    assert isinstance(decode_image(tmp_path / "f.tiff", max_pixels=6_000_000), Decoded)


def test_a_nul_byte_in_one_manifest_row_rejects_that_row_only(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        picture(np.random.default_rng(len(name))).save(tmp_path / name)
    manifest = tmp_path / "products.csv"
    manifest.write_text('product_id,image,title\nA,a.jpg,x\nB,"b\x00.jpg",y\nC,b.jpg,z\n')
    scan = scan_catalog(tmp_path, options=ScanOptions(manifest=manifest))
    assert sorted(scan.table["image_id"]) == ["a.jpg", "b.jpg"]
    [(image_id, reason)] = scan.rejected[["image_id", "reason"]].itertuples(index=False)
    assert image_id == "b\\x00.jpg"
    assert reason == "products.csv row 3: image path holds a NUL byte"


def test_a_repeated_manifest_header_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "products.csv"
    manifest.write_text("product_id,image,title,title\nA,a.jpg,x,y\n")
    with pytest.raises(ManifestError, match=r"\['title'\] appear more than once"):
        load_manifest(manifest, tmp_path)


def test_the_lock_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / ".lock").symlink_to(target)
    with pytest.raises(WorkspaceBusy, match="symbolic link"), workspace_lock(workspace, "t"):
        pass
    assert target.read_text() == "keep me"
