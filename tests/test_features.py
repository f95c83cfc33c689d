import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.configs import write_config
from tests.imagefactory import write_bad_images, write_good_images
from vasrch.catalog.images import DEFAULT_MAX_PIXELS, decode_image
from vasrch.catalog.scan import scan_catalog
from vasrch.features.backbones import BackboneSpec, fingerprint, load_backbone
from vasrch.features.extraction import (
    _decoded_batches,
    cache_dir_for,
    extract_chunk,
    iter_shards,
    load_vectors,
    plan_chunks,
    read_rejections,
    shard_paths,
    summarize,
)

SPEC = BackboneSpec()


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(SPEC, batch_size=8)


def _extract_all(root: Path, cache: Path, backbone, shard_size: int = 1024) -> None:
    for rows in plan_chunks(scan_catalog(root).table, cache, shard_size):
        extract_chunk(rows, backbone, cache)


def test_good_extracted_bad_rejected_with_reasons(tmp_path: Path, backbone) -> None:
    good = write_good_images(tmp_path / "cat" / "good")
    bad = write_bad_images(tmp_path / "cat" / "bad")
    cache = tmp_path / "cache"
    _extract_all(tmp_path / "cat", cache, backbone, shard_size=7)
    catalog = scan_catalog(tmp_path / "cat").table
    ids, vectors = load_vectors(cache, catalog)
    root = tmp_path / "cat"
    assert sorted(ids) == sorted(p.relative_to(root).as_posix() for p in good)
    assert vectors.shape == (len(good), 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    spilled_ids, spilled = load_vectors(cache, catalog, out=tmp_path / "spill" / "vectors.npy")
    assert isinstance(spilled, np.memmap) and list(spilled_ids) == list(ids)
    np.testing.assert_array_equal(spilled, vectors)  # shards streamed into the file instead
    reasons = dict(
        zip(read_rejections(cache)["image_id"], read_rejections(cache)["reason"], strict=True)
    )
    for path, fragment in bad.items():
        rid = path.relative_to(root).as_posix()
        assert fragment in reasons[rid], (rid, reasons.get(rid))
    assert plan_chunks(catalog, cache, 7) == []


def test_the_first_batch_is_out_after_two_batches_of_items_not_three(demo_catalog: Path) -> None:
    photos = sorted(demo_catalog.rglob("*.jpg"))[:20]
    pulled: list[Path] = []

    def items():  # as a stream of downloads hands them over: one at a time, when they come
        for photo in photos:
            pulled.append(photo)
            yield photo.name, str(photo), ""

    def read(path: str, sha256: str) -> bytes:
        return Path(path).read_bytes()

    batches = _decoded_batches(items(), read, None, 32, 4, 1, DEFAULT_MAX_PIXELS)
    first = next(batches)
    assert [item[0] for item, _ in first] == [p.name for p in photos[:4]]
    assert len(pulled) == 8  # the first batch and the next one in the decoder, no more
    next(batches)
    assert len(pulled) == 8 + 8  # then two batches ahead of the model
    assert sum(len(batch) for batch in batches) == 12 and len(pulled) == 20


def test_rename_and_move_reuse_cache(tmp_path: Path, backbone) -> None:
    root = tmp_path / "cat"
    paths = write_good_images(root / "a", n=6)
    cache = tmp_path / "cache"
    _extract_all(root, cache, backbone)
    before = {t.column("sha256")[i].as_py() for t in iter_shards(cache) for i in range(len(t))}
    (root / "moved").mkdir()
    for i, p in enumerate(paths):
        shutil.move(p, root / "moved" / f"renamed-{i}{p.suffix}")
    catalog = scan_catalog(root).table
    assert plan_chunks(catalog, cache, 1024) == []
    ids, _ = load_vectors(cache, catalog)
    assert len(ids) == 6 and all(i.startswith("moved/renamed-") for i in ids)
    assert set(catalog["sha256"]) == before


def test_duplicate_bytes_share_one_vector(tmp_path: Path, backbone) -> None:
    root = tmp_path / "cat"
    [p] = write_good_images(root, n=1)
    shutil.copy(p, root / f"copy{p.suffix}")
    cache = tmp_path / "cache"
    _extract_all(root, cache, backbone)
    assert sum(len(t) for t in iter_shards(cache)) == 1
    ids, vectors = load_vectors(cache, scan_catalog(root).table)
    assert len(ids) == 2 and np.array_equal(vectors[0], vectors[1])


def test_vectors_do_not_depend_on_batching(tmp_path: Path, demo_catalog: Path) -> None:
    catalog = scan_catalog(demo_catalog).table.head(20)
    a, b = tmp_path / "a", tmp_path / "b"
    extract_chunk(catalog, load_backbone(SPEC, batch_size=8), a)
    for i in range(0, 20, 3):
        extract_chunk(catalog.iloc[i : i + 3], load_backbone(SPEC, batch_size=4), b)
    ids_a, va = load_vectors(a, catalog)
    ids_b, vb = load_vectors(b, catalog)
    assert list(ids_a) == list(ids_b)
    np.testing.assert_allclose(va, vb, atol=1e-4)


def test_one_query_photo_embeds_as_batch_extraction(tmp_path: Path, demo_catalog: Path) -> None:
    """The query path (one decoded photo, a backbone of batch size 1, as the query service
    loads it) gives the vector that batch extraction stored for the same photo."""
    catalog = scan_catalog(demo_catalog).table.head(12)
    extract_chunk(catalog, load_backbone(SPEC, batch_size=8), tmp_path)
    ids, stored = load_vectors(tmp_path, catalog)
    one = load_backbone(SPEC, batch_size=1)
    for image_id, vector in zip(ids[:4], stored[:4], strict=True):
        pixels = decode_image(demo_catalog / image_id, SPEC.input_size).pixels
        np.testing.assert_allclose(one.embed(pixels[None])[0], vector, atol=1e-5)


def _shard_rows(cache: Path) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}
    for p in shard_paths(cache):
        t = pq.read_table(p)
        for sha, vec in zip(
            t.column("sha256").to_pylist(), t.column("feature").to_pylist(), strict=True
        ):
            assert sha not in rows, "duplicate row across shards"
            rows[sha] = np.asarray(vec, dtype=np.float32)
    return rows


@pytest.mark.slow  # long: run with -m slow
def test_kill_minus_9_then_resume_equals_uninterrupted(tmp_path: Path, demo_catalog: Path) -> None:
    def config(ws: str) -> Path:
        data = {
            "catalog": {"path": str(demo_catalog)},
            "workspace": ws,
            "features": {"shard_size": 4, "batch_size": 4},
        }
        return write_config(tmp_path, data, f"{ws}.yaml")

    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR"}
    cmd = [sys.executable, "-m", "vasrch.cli", "extract", "--no-progress", "-c"]
    cache = cache_dir_for(tmp_path / "killed", fingerprint(SPEC))
    proc = subprocess.Popen(
        [*cmd, str(config("killed"))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so the kill also reaches the Prefect server it starts
    )
    deadline = time.time() + 240
    while len(shard_paths(cache)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = len(shard_paths(cache))
    assert 3 <= interrupted < 12, "the kill did not land mid-run"
    subprocess.run([*cmd, str(config("killed"))], env=env, check=True, capture_output=True)
    subprocess.run([*cmd, str(config("clean"))], env=env, check=True, capture_output=True)
    resumed = _shard_rows(cache)
    clean = _shard_rows(cache_dir_for(tmp_path / "clean", fingerprint(SPEC)))
    assert set(resumed) == set(clean) and len(clean) == 48
    for sha, vec in clean.items():
        np.testing.assert_allclose(resumed[sha], vec, atol=1e-4)


def test_read_failures_are_reported_not_cached_and_retried(tmp_path: Path, backbone) -> None:
    root = tmp_path / "cat"
    _, moved, edited, grown = write_good_images(root, n=4)
    cache = tmp_path / "cache"
    scan = scan_catalog(root)
    original = edited.read_bytes()
    edited.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # changed since the scan
    shutil.move(moved, tmp_path / "away")  # gone since the scan: cannot be read
    shutil.copy(grown, tmp_path / "grown-original")
    os.truncate(grown, 2_000_000)  # grew past the limit since the scan
    [chunk] = plan_chunks(scan.table, cache, 1024)
    result = extract_chunk(chunk, backbone, cache, max_file_bytes=1_000_000)
    assert result.extracted == 1 and result.rejected == 3
    summary = summarize(scan, [result], cache, "fp", 1.0)
    reasons = dict(zip(summary.rejections["image_id"], summary.rejections["reason"], strict=True))
    ids = {p: p.relative_to(root).as_posix() for p in (moved, edited, grown)}
    assert reasons[ids[edited]] == "file changed since the catalog scan; retried next run"
    assert reasons[ids[moved]].startswith("cannot read file: No such file or directory")
    assert "now over features.max_file_bytes 1000000" in reasons[ids[grown]]
    assert summary.rejections["retry"].all()
    assert (summary.seen, summary.new, summary.reused, summary.rejected) == (4, 1, 0, 3)
    assert read_rejections(cache).empty  # nothing cached: the same bytes are tried again
    edited.write_bytes(original)
    shutil.move(tmp_path / "away", moved)
    shutil.copy(tmp_path / "grown-original", grown)
    [again] = plan_chunks(scan.table, cache, 1024)
    assert set(again["image_id"]) == set(ids.values())
    assert extract_chunk(again, backbone, cache).extracted == 3
    assert plan_chunks(scan_catalog(root, previous=scan.table).table, cache, 1024) == []


def test_read_failures_cached_by_older_versions_are_retried(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_good_images(root, n=2)
    table = scan_catalog(root).table
    cache = tmp_path / "cache"
    cache.mkdir()
    legacy = pd.DataFrame(
        {
            "sha256": table["sha256"],
            "image_id": table["image_id"],
            "reason": ["cannot read file: Permission denied", "corrupt image: broken"],
        }
    )
    legacy.to_parquet(cache / "rejected-legacy.parquet", index=False)
    [chunk] = plan_chunks(table, cache, 1024)
    assert list(chunk["image_id"]) == [table["image_id"][0]]
    retried = legacy.head(1).assign(reason="corrupt image: the retry decoded nothing")
    retried.to_parquet(cache / "rejected-new.parquet", index=False)
    assert plan_chunks(table, cache, 1024) == []
