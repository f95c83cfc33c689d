"""Catalogs in object storage, against a real S3-compatible store (SeaweedFS, started once per
session by the `object_store` fixture): listing, change detection by ETag and size, credentials
from the AWS_* variables, a missing extra named, and a whole train run on a bucket."""

from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.configs import small_run_config, write_config
from tests.object_store import ObjectStore, s3_environment, upload_folder
from vasrch.catalog.object_store import filesystem
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.catalog.sources import Fetching
from vasrch.errors import ConfigError

BUCKET = "vasrch-test"
_prefixes = itertools.count()


@pytest.fixture
def bucket(object_store: ObjectStore, demo_catalog: Path) -> str:
    """A fresh prefix of the test bucket holding the demo catalog (48 photos, class folders), a
    hidden object and a file that is not an image; its s3:// URL."""
    fs = object_store.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    prefix = f"{BUCKET}/shop-{next(_prefixes)}"
    upload_folder(object_store, demo_catalog, prefix)
    fs.pipe({f"{prefix}/.hidden/x.jpg": b"hidden", f"{prefix}/notes.txt": b"not a photo"})
    return f"s3://{prefix}"


def _options(store: ObjectStore, tmp_path: Path) -> ScanOptions:
    return ScanOptions(
        fetching=Fetching(storage_options=store.storage_options),
        record=tmp_path / "listing.parquet",
    )


def _local_shas(folder: Path) -> dict[str, str]:
    scan = scan_catalog(folder)
    return dict(zip(scan.table["image_id"], scan.table["sha256"], strict=True))


def test_store_scan_lists_photos_like_the_same_folder(
    object_store: ObjectStore, bucket: str, demo_catalog: Path, tmp_path: Path
) -> None:
    scan = scan_catalog(bucket, options=_options(object_store, tmp_path))
    local = scan_catalog(demo_catalog)
    assert list(scan.table["image_id"]) == list(local.table["image_id"])
    assert list(scan.table["sha256"]) == list(local.table["sha256"])
    assert list(scan.table["category"]) == list(local.table["category"])
    assert list(scan.table["path"]) == [f"{bucket}/{i}" for i in local.table["image_id"]]
    assert scan.rejected.empty


def test_unchanged_objects_are_not_read_again_and_changed_ones_are(
    object_store: ObjectStore, bucket: str, demo_catalog: Path, tmp_path: Path
) -> None:
    options = _options(object_store, tmp_path)
    first = scan_catalog(bucket, options=options).table.set_index("image_id")["sha256"]
    unchanged, changed, removed = first.index[:3]
    # Mark one photo's recorded sha256: a scan that reused the record shows the mark, one that
    # downloaded the object would show its real sha256.
    record = pd.read_parquet(options.record)
    record.loc[record["path"] == f"{bucket}/{unchanged}", "sha256"] = "recorded"
    record.to_parquet(options.record, index=False)
    fs = object_store.filesystem()
    new_bytes = (demo_catalog / first.index[10]).read_bytes()
    fs.pipe({f"{bucket}/{changed}": new_bytes})
    fs.rm(f"{bucket}/{removed}")
    second = scan_catalog(bucket, options=options).table.set_index("image_id")["sha256"]
    assert second[unchanged] == "recorded"
    assert second[changed] == hashlib.sha256(new_bytes).hexdigest()
    assert removed not in second.index
    rest = first.index[3:]
    assert (second[rest] == first[rest]).all()


def test_too_large_objects_are_rejected_without_a_read(
    object_store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    options = ScanOptions(max_file_bytes=2_000, fetching=Fetching(object_store.storage_options))
    scan = scan_catalog(bucket, options=options)
    assert len(scan.table) + len(scan.rejected) == 48
    assert len(scan.rejected) > 0
    assert scan.rejected["reason"].str.contains("features.max_file_bytes 2000; not read").all()
    assert scan.rejected["path"].str.startswith(bucket).all()


def test_credentials_and_endpoint_come_from_the_aws_variables(
    object_store: ObjectStore, bucket: str, demo_catalog: Path, tmp_path: Path
) -> None:
    with s3_environment(object_store):
        scan = scan_catalog(bucket, options=ScanOptions())
    assert dict(zip(scan.table["image_id"], scan.table["sha256"], strict=True)) == _local_shas(
        demo_catalog
    )


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fsspec")
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "gs", raising=False)
    with pytest.raises(ConfigError, match=r'pip install "vasrch\[gcs\]"'):
        filesystem("gs://shop/photos")


def test_a_manifest_mixes_relative_keys_store_urls_and_local_files(
    object_store: ObjectStore, bucket: str, demo_catalog: Path, tmp_path: Path
) -> None:
    local = _local_shas(demo_catalog)
    ids = sorted(local)
    manifest = tmp_path / "products.csv"
    rows = {
        "p0": ids[0],  # relative: a key below catalog.path, the bucket prefix
        "p1": f"{bucket}/{ids[1]}",  # a store URL
        "p2": str(demo_catalog / ids[2]),  # a local file
        "p3": f"{bucket}/missing.jpg",
    }
    pd.DataFrame({"product_id": list(rows), "image": list(rows.values())}).to_csv(
        manifest, index=False
    )
    options = ScanOptions(
        manifest=manifest,
        allow_absolute_paths=True,
        fetching=Fetching(object_store.storage_options),
        record=tmp_path / "listing.parquet",
    )
    scan = scan_catalog(bucket, options=options)
    shas = dict(zip(scan.table["product_id"], scan.table["sha256"], strict=True))
    assert shas == {"p0": local[ids[0]], "p1": local[ids[1]], "p2": local[ids[2]]}
    assert list(scan.rejected["path"]) == [f"{bucket}/missing.jpg"]
    assert "products.csv row 5" in scan.rejected["reason"].iloc[0]
    assert "not found" in scan.rejected["reason"].iloc[0]


def test_s3_listing_follows_pages_and_matches_s3fs(
    object_store: ObjectStore, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vasrch.catalog import s3_listing

    monkeypatch.setattr(s3_listing, "PAGE_KEYS", 4)  # 51 objects: 13 pages
    fs = object_store.filesystem()
    path = bucket.removeprefix("s3://")
    listed = {e["name"]: (e["size"], e["ETag"]) for e in s3_listing.find_s3(fs, path)}
    fs.invalidate_cache()
    found = fs.find(path, detail=True)
    assert listed == {name: (info["size"], info["ETag"]) for name, info in found.items()}
    assert len(listed) == 51  # 48 photos, the demo marker, a hidden photo, notes.txt


@pytest.mark.slow
def test_train_then_refresh_on_a_bucket(
    object_store: ObjectStore, bucket: str, demo_catalog: Path, tmp_path: Path
) -> None:
    """A whole run on a bucket: photos embedded from the store, the report linking each photo's
    URL, then a refresh after one photo is replaced and one removed in the bucket."""
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow

    config = small_run_config(bucket)  # type: ignore[arg-type]
    config["catalog"]["storage_options"] = object_store.storage_options
    path = str(write_config(tmp_path, config))
    trained = train_flow(path)
    assert trained.extract.new == 48 and trained.extract.rejected == 0
    catalog = pd.read_parquet(trained.run_dir / "catalog.parquet")
    assert catalog["path"].str.startswith(f"{bucket}/").all()
    report = (trained.run_dir / "report.html").read_text()
    assert f'href="{bucket}/' in report and "placeholder.jpg" not in report

    replaced, removed = catalog["image_id"].iloc[0], catalog["image_id"].iloc[1]
    fs = object_store.filesystem()
    fs.pipe({f"{bucket}/{replaced}": (demo_catalog / catalog["image_id"].iloc[20]).read_bytes()})
    fs.rm(f"{bucket}/{removed}")
    result = refresh_flow(path)
    assert result.published
    assert (result.changes.replaced, result.changes.removed) == ((replaced,), (removed,))
    assert result.extract.new == 0  # the new bytes are another photo's: its vector is cached


def test_a_bucket_that_cannot_be_listed_is_one_clear_error(object_store: ObjectStore) -> None:
    from vasrch.errors import DataError

    options = ScanOptions(fetching=Fetching(object_store.storage_options))
    with pytest.raises(DataError, match="s3://no-such-bucket-here/shop: no such bucket"):
        scan_catalog("s3://no-such-bucket-here/shop", options=options)


def test_the_query_page_reads_bucket_photos_with_the_catalogs_store_options(
    object_store: ObjectStore, bucket: str, demo_catalog: Path, tmp_path: Path
) -> None:
    """The page's thumbnails of catalog photos on the store are read with the catalog's
    storage_options (endpoint and keys), which the query flow passes on."""
    from vasrch.pages.query_page import write_query_page

    query = tmp_path / "query.jpg"
    query.write_bytes((demo_catalog / "hat" / "hat_001.jpg").read_bytes())
    ids = ["hat/hat_002.jpg", "bag/bag_001.jpg"]
    table = pd.DataFrame(
        {
            "query": [str(query)] * 2,
            "rank": [1, 2],
            "product_id": ids,
            "score": [0.9, 0.8],
            "image_id": ids,
            "path": [f"{bucket}/{i}" for i in ids],
        }
    )
    out = tmp_path / "page"
    write_query_page(out, table, [], "query", fetching=Fetching(object_store.storage_options))
    page = (out / "results.html").read_text()
    assert "placeholder.jpg" not in page and page.count('src="thumbs/') == 3, page
