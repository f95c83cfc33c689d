"""Catalogs on gs:// and az://, against fake-gcs-server and Azurite started by the tests
(tests/cloud_emulators.py): scanned like the same folder, extracted, rescanned unchanged without
a download, a changed object downloaded again."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pandas as pd
import pytest

from tests.cloud_emulators import Emulator
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.catalog.sources import Fetching
from vasrch.features.backbones import BackboneSpec, load_backbone
from vasrch.features.extraction import extract_chunk, plan_chunks

BUCKET = "vasrch-catalogs"
PHOTOS = 8
_prefixes = itertools.count()


@pytest.fixture(params=["gs", "az"])
def emulator(request: pytest.FixtureRequest) -> Emulator:
    """The GCS or the Azure emulator, with the catalog bucket (container)."""
    found = request.getfixturevalue({"gs": "gcs_emulator", "az": "azure_emulator"}[request.param])
    fs = found.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return found


def _upload(emulator: Emulator, demo_catalog: Path) -> tuple[str, dict[str, str]]:
    """PHOTOS photos of the demo catalog under a fresh prefix: its URL and each photo's sha256
    by key."""
    prefix = f"{BUCKET}/shop-{next(_prefixes)}"
    files = sorted(p for p in demo_catalog.rglob("*.jpg"))[:PHOTOS]
    keys = {p.relative_to(demo_catalog).as_posix(): p.read_bytes() for p in files}
    emulator.filesystem().pipe({f"{prefix}/{k}": data for k, data in keys.items()})
    shas = {k: hashlib.sha256(data).hexdigest() for k, data in keys.items()}
    return f"{emulator.protocol}://{prefix}", shas


def test_a_catalog_on_gcs_or_azure_is_scanned_extracted_and_rescanned(
    emulator: Emulator, demo_catalog: Path, tmp_path: Path
) -> None:
    url, shas = _upload(emulator, demo_catalog)
    fetching = Fetching(storage_options=emulator.storage_options)
    options = ScanOptions(fetching=fetching, record=tmp_path / "listing.parquet")
    first = scan_catalog(url, options=options)
    assert dict(zip(first.table["image_id"], first.table["sha256"], strict=True)) == shas
    assert first.rejected.empty

    backbone = load_backbone(BackboneSpec(name="MobileNetV2", weights="none", image_size=64))
    cache = tmp_path / "features"
    results = [
        extract_chunk(rows, backbone, cache, fetching=fetching)
        for rows in plan_chunks(first.table, cache, 64)
    ]
    assert sum(r.extracted for r in results) == PHOTOS and not any(r.rejected for r in results)

    # Mark one photo's recorded sha256: a rescan that reused the record shows the mark, one
    # that downloaded the object would show its real sha256.
    unchanged, changed = sorted(shas)[:2]
    record = pd.read_parquet(options.record)
    record.loc[record["path"] == f"{url}/{unchanged}", "sha256"] = "recorded"
    record.to_parquet(options.record, index=False)
    new_bytes = (demo_catalog / sorted(shas)[-1]).read_bytes()
    emulator.filesystem().pipe({f"{url}/{changed}": new_bytes})
    second = scan_catalog(url, options=options).table.set_index("image_id")["sha256"]
    assert second[unchanged] == "recorded"
    assert second[changed] == hashlib.sha256(new_bytes).hexdigest()
    rest = sorted(shas)[2:]
    assert list(second[rest]) == [shas[k] for k in rest]
