"""Manifests whose `image` column holds URLs, against a real HTTP server on loopback
(tests/feed_server.py): every failure a recorded rejection, conditional requests on the next
scan, the byte cap enforced while streaming, extraction equal to a local folder's."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.feed_server import HUGE_BYTES, feed_server, photos_of
from vasrch.catalog.downloads import FetchPolicy
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.catalog.sources import Fetching, read_photo
from vasrch.features.backbones import BackboneSpec, load_backbone
from vasrch.features.extraction import extract_chunk, load_vectors, plan_chunks, read_rejections
from vasrch.features.streamed import StreamedExtraction

MAX_BYTES = 8_000_000
# A crowded machine may answer a loopback request late: one more try than the 503s need.
POLICY = FetchPolicy(timeout_s=1.5, retries=3, backoff_s=0.05)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(BackboneSpec(), batch_size=8)


@pytest.fixture
def feed(demo_catalog: Path):
    photos = photos_of(demo_catalog, 6) | {"notes.jpg": b"this is not a photo"}
    with feed_server(photos) as server:
        yield server


def _manifest(tmp_path: Path, urls: list[str]) -> Path:
    path = tmp_path / "feed.csv"
    frame = pd.DataFrame({"product_id": [f"p{i}" for i in range(len(urls))], "image": urls})
    frame.to_csv(path, index=False)
    return path


def _options(manifest: Path, tmp_path: Path, **fetching: object) -> ScanOptions:
    return ScanOptions(
        MAX_BYTES,
        manifest=manifest,
        fetching=Fetching(policy=POLICY, **fetching),
        record=tmp_path / "record.parquet",
    )


def test_every_failure_is_a_rejection_with_its_url_and_reason(feed, tmp_path: Path) -> None:
    names = sorted(feed.photos)
    good = [feed.url("ok", n) for n in names]
    bad = {
        feed.url("missing", names[0]): "HTTP 404",
        feed.url("forbidden", names[0]): "HTTP 403",
        feed.url("slow", names[1]): "timed out",
        feed.url("cut", names[2]): "connection closed mid-body",
        feed.url("huge", names[3]): "file too large",
    }
    retried = [feed.url("429", names[4]), feed.url("503", names[5])]
    manifest = _manifest(tmp_path, [*good, *bad, *retried])
    scan = scan_catalog(tmp_path, options=_options(manifest, tmp_path))

    shas = dict(zip(scan.table["image_id"], scan.table["sha256"], strict=True))
    expected = {feed.url("ok", n): hashlib.sha256(feed.photos[n]).hexdigest() for n in names}
    expected[retried[0]] = hashlib.sha256(feed.photos[names[4]]).hexdigest()
    expected[retried[1]] = hashlib.sha256(feed.photos[names[5]]).hexdigest()
    assert shas == expected
    assert feed.requests[f"/429/{names[4]}"] >= 2  # one 429 (Retry-After: 1), then the photo
    assert feed.requests[f"/503/{names[5]}"] >= 3  # two 503s, then the photo
    reasons = dict(zip(scan.rejected["path"], scan.rejected["reason"], strict=True))
    assert set(reasons) == set(bad)
    for url, fragment in bad.items():
        assert fragment in reasons[url] and "feed.csv row" in reasons[url], reasons[url]
    # the 2 GB body was dropped once it passed the cap, far from its end
    assert feed.huge_sent and max(feed.huge_sent) < MAX_BYTES + 64 * 2**20 < HUGE_BYTES


def test_next_scan_asks_conditionally_and_retries_the_failures(feed, tmp_path: Path) -> None:
    names = sorted(feed.photos)
    good = [feed.url("ok", n) for n in names]
    missing = feed.url("missing", names[0])
    options = _options(_manifest(tmp_path, [*good, missing]), tmp_path)
    first = scan_catalog(tmp_path, options=options)
    assert not feed.not_modified
    second = scan_catalog(tmp_path, options=options)
    pd.testing.assert_frame_equal(first.table, second.table)
    assert all(feed.not_modified[f"/ok/{n}"] >= 1 for n in names)
    assert feed.requests[f"/missing/{names[0]}"] >= 2
    assert list(second.rejected["path"]) == [missing]
    # a photo whose bytes change gets its new sha256
    feed.photos[names[0]] = feed.photos[names[1]]
    third = scan_catalog(tmp_path, options=options).table.set_index("image_id")["sha256"]
    assert third[good[0]] == hashlib.sha256(feed.photos[names[1]]).hexdigest()


def test_feed_photos_embed_like_the_same_local_files_downloaded_once(
    feed, tmp_path: Path, backbone, demo_catalog: Path
) -> None:
    names = sorted(feed.photos)
    manifest = _manifest(tmp_path, [feed.url("ok", n) for n in names])
    remote_cache = tmp_path / "remote-cache"
    # As the extract flow does: extraction fed by the scan's downloads, then chunks for the rest
    with StreamedExtraction(backbone, remote_cache, shard_size=4) as stream:
        options = _options(manifest, tmp_path)
        scan = scan_catalog(tmp_path, options=options, on_bytes=stream.offer)
    assert plan_chunks(scan.table, remote_cache, 4) == []
    assert [feed.requests[f"/ok/{n}"] for n in names] == [1] * len(names)
    assert sum(r.extracted for r in stream.results) == len(names) - 1
    assert len(stream.results) == 2  # shards of at most 4
    local = scan_catalog(demo_catalog).table
    local_cache = tmp_path / "local-cache"
    for rows in plan_chunks(local, local_cache, 64):
        extract_chunk(rows, backbone, local_cache)
    remote_ids, remote_vectors = load_vectors(remote_cache, scan.table)
    by_sha = dict(zip(local["sha256"], range(len(local)), strict=False))
    _, local_vectors = load_vectors(local_cache, local)
    sha_of = dict(zip(scan.table["image_id"], scan.table["sha256"], strict=True))
    assert len(remote_ids) == len(names) - 1
    for i, image_id in enumerate(remote_ids):
        np.testing.assert_allclose(
            remote_vectors[i], local_vectors[by_sha[sha_of[image_id]]], atol=1e-6
        )
    rejected = read_rejections(remote_cache)
    assert list(rejected["image_id"]) == [feed.url("ok", "notes.jpg")]
    assert "not an image" in rejected["reason"].iloc[0]
    # Downloaded again (no listing record): the cache holds every sha256, nothing is embedded
    with StreamedExtraction(backbone, remote_cache, shard_size=4) as again:
        scan_catalog(tmp_path, options=replace(options, record=None), on_bytes=again.offer)
    assert [feed.requests[f"/ok/{n}"] for n in names] == [2] * len(names)
    assert again.results == []


def test_cache_dir_keeps_downloads_so_extraction_reads_no_url_again(feed, tmp_path: Path) -> None:
    names = sorted(n for n in feed.photos if n != "notes.jpg")
    manifest = _manifest(tmp_path, [feed.url("ok", n) for n in names])
    keep = tmp_path / "photos-cache"
    scan = scan_catalog(tmp_path, options=_options(manifest, tmp_path, cache_dir=keep))
    before = sum(feed.requests.values())
    fetching = Fetching(cache_dir=keep, policy=POLICY)
    for path, sha in zip(scan.table["path"], scan.table["sha256"], strict=True):
        assert hashlib.sha256(read_photo(path, MAX_BYTES, fetching, sha)).hexdigest() == sha
    assert sum(feed.requests.values()) == before
    assert sorted(p.name for p in keep.rglob("*") if p.is_file()) == sorted(scan.table["sha256"])


def test_per_host_rate_limit_spaces_requests(feed, tmp_path: Path) -> None:
    names = sorted(feed.photos)
    manifest = _manifest(tmp_path, [feed.url("ok", n) for n in names])
    options = ScanOptions(
        MAX_BYTES,
        manifest=manifest,
        fetching=Fetching(policy=FetchPolicy(timeout_s=5, host_rate=10)),
    )
    start = time.monotonic()
    scan_catalog(tmp_path, options=options)
    assert time.monotonic() - start >= (len(names) - 1) / 10


def test_a_catalog_folder_is_not_needed_when_every_photo_is_a_url(feed, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, [feed.url("ok", sorted(feed.photos)[0])])
    scan = scan_catalog(tmp_path / "absent", options=_options(manifest, tmp_path))
    assert len(scan.table) == 1 and scan.table["bytes"].iloc[0] > 0


def test_report_thumbnails_of_feed_photos_link_their_urls(feed, tmp_path: Path) -> None:
    from vasrch.pages.thumbnails import write_thumbnails

    names = sorted(n for n in feed.photos if n != "notes.jpg")
    paths = {f"p{i}": feed.url("ok", n) for i, n in enumerate(names)}
    paths["gone"] = feed.url("missing", names[0])
    thumbs = write_thumbnails(paths, paths, tmp_path, fetching=Fetching(policy=POLICY))
    for image_id, url in paths.items():
        if image_id == "gone":
            assert "HTTP 404" in (thumbs[image_id].problem or "")
            continue
        assert thumbs[image_id].problem is None and thumbs[image_id].href == url
        assert (tmp_path / thumbs[image_id].src).is_file()


def test_a_failing_streamed_extraction_stops_the_scan_with_its_error(
    feed, tmp_path: Path, backbone
) -> None:
    names = sorted(feed.photos)
    manifest = _manifest(tmp_path, [feed.url("ok", n) for n in names])
    not_a_folder = tmp_path / "features"
    not_a_folder.write_text("a file where the feature cache should be")
    with (
        pytest.raises(FileExistsError),
        StreamedExtraction(backbone, not_a_folder, shard_size=2, capacity=1) as stream,
    ):
        scan_catalog(tmp_path, options=_options(manifest, tmp_path), on_bytes=stream.offer)
    assert sum(feed.requests.values()) == len(names)  # the scan went on, nothing hung


def test_streamed_extraction_counts_the_time_it_waited_for_downloads(
    tmp_path: Path, backbone, demo_catalog: Path
) -> None:
    photos = sorted(demo_catalog.rglob("*.jpg"))[:2]
    start = time.perf_counter()
    with StreamedExtraction(backbone, tmp_path / "cache", shard_size=4) as stream:
        for photo in photos:  # slow downloads: the model waits for the next one each time
            data = photo.read_bytes()
            stream.offer(photo.name, str(photo), hashlib.sha256(data).hexdigest(), data)
            time.sleep(0.5)
        time.sleep(0.5)  # and for the scan's end
    assert sum(r.extracted for r in stream.results) == len(photos)
    # 1.5 s from the first photo to the end, less the embedding thread's own start
    assert 1.0 <= stream.waited_s < time.perf_counter() - start
