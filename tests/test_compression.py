"""Vectors within a memory budget: the choice, compressed search re-ranked from the full
vectors on disk, and compressed runs trained, queried, served and refreshed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.configs import small_run_config, write_config
from tests.service_helpers import catalog_image, serving, upload
from vasrch.errors import ConfigError
from vasrch.index.compression import AUTO_FULL_BELOW, choose_storage, shortlist_size
from vasrch.index.evaluation import recall_at_k
from vasrch.index.search_index import brute_force, build_index, compress, load_index, save
from vasrch.layout import IndexLayout, RunLayout


def test_auto_keeps_float32_below_the_threshold_and_compresses_above() -> None:
    small = choose_storage(AUTO_FULL_BELOW - 1, 1280, "auto")
    assert (small.method, small.bytes_per_photo) == ("float32", 5120)
    large = choose_storage(AUTO_FULL_BELOW, 1280, "auto")
    assert large.method == "pca-int8" and large.budget == 400
    assert large.bytes_per_photo <= 400 - 64 and "auto" in large.reason


def test_an_explicit_budget_decides_whatever_the_size() -> None:
    assert choose_storage(10, 64, 64 + 256).method == "float32"  # 4 x 64 fits beside the ids
    tight = choose_storage(10, 64, 64 + 100)
    assert (tight.method, tight.dims) == ("pca-int8", 64)  # all 64 as int8, not as float32
    assert choose_storage(10, 1280, 300).dims == 232
    with pytest.raises(ConfigError, match="max_bytes_per_photo"):
        choose_storage(10, 1280, 70)


def _catalog(n: int = 3000, dim: int = 64, rank: int = 20, seed: int = 0):
    """Unit vectors around 30 centres in a `rank`-dimensional subspace, plus a little noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T
    centres = rng.normal(size=(30, rank))
    z = centres[rng.integers(0, 30, n)] + 0.6 * rng.normal(size=(n, rank))
    x = (z @ basis + 0.01 * rng.normal(size=(n, dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.argmax(x @ x[:30].T, axis=1)
    ids = np.array([f"p{i:05d}" for i in range(n)], dtype=object)
    return ids, x, build_index(ids, x, x[:30], labels, "fp")


def test_compressed_search_at_full_probes_is_exact() -> None:
    ids, x, index = _catalog()
    small = compress(index, 64 + 32)  # 32 int8 values a photo where float32 takes 256 bytes
    assert small.storage.method == "pca-int8" and small.codes.shape == (3000, 32)
    assert small.codes.dtype == np.int8
    queries = x[:50] + 0.05 * np.random.default_rng(1).normal(size=(50, 64)).astype(np.float32)
    found = small.search(queries, top_n=10, probes=small.k)
    exact = brute_force(queries, ids, x, top_n=10)
    np.testing.assert_array_equal(found.ids, exact.ids)
    np.testing.assert_allclose(found.scores, exact.scores, rtol=1e-5)


def test_compressed_recall_stays_close_to_float32() -> None:
    ids, x, index = _catalog(seed=2)
    small = compress(index, 64 + 16)  # 16 dimensions of a 20-dimensional signal
    queries = x[::20]
    exact = brute_force(queries, ids, x, top_n=10, exclude_ids=list(ids[::20]))
    for probes in (1, 3):
        full = index.search(queries, 10, probes, exclude_ids=list(ids[::20]))
        coded = small.search(queries, 10, probes, exclude_ids=list(ids[::20]))
        assert recall_at_k(coded, exact, 10) >= recall_at_k(full, exact, 10) - 0.02


def test_the_shortlist_grows_with_the_rows_probes_scan() -> None:
    assert shortlist_size(3000, 76, 10, 8) == 100  # clothing-small's size: the minimum
    assert shortlist_size(100_000, 632, 10, 32) == 507  # a tenth of the 5,063 rows scanned
    assert shortlist_size(50, 5, 10, 5) == 50  # never more than the catalog


def test_compressed_recall_holds_when_probes_scan_thousands_of_rows() -> None:
    # Catalog-like vectors: 8 broad clusters, each spread along its own 24 directions (192 in
    # all, which 32 PCA codes cannot hold), plus noise; 16 of 40 probes scan about 8,000 rows,
    # where a fixed shortlist of 100 kept recall@10 at 0.67 against float32's 1.00
    rng = np.random.default_rng(3)
    n, dim, rank = 20_000, 256, 24
    cluster = rng.integers(0, 8, n)
    x = 0.5 * rng.normal(size=(8, dim))[cluster] + 0.1 * rng.normal(size=(n, dim))
    for c in range(8):
        basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T
        x[cluster == c] += rng.normal(size=(int((cluster == c).sum()), rank)) @ basis
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    centres = x[rng.choice(n, 40, replace=False)]
    ids = np.array([f"p{i:05d}" for i in range(n)], dtype=object)
    index = build_index(ids, x, centres, np.argmax(x @ centres.T, axis=1), "fp")
    small = compress(index, 64 + 32)  # 32 int8 PCA values a photo
    queries, exclude = x[::100], list(ids[::100])
    exact = brute_force(queries, ids, x, top_n=10, exclude_ids=exclude)
    full = recall_at_k(index.search(queries, 10, 16, exclude_ids=exclude), exact, 10)
    coded = recall_at_k(small.search(queries, 10, 16, exclude_ids=exclude), exact, 10)
    assert full > 0.95 and coded >= full - 0.03


def test_a_compressed_index_loads_its_codes_and_maps_its_vectors(tmp_path: Path) -> None:
    _, x, index = _catalog()
    small = compress(index, 64 + 32)
    save(small, tmp_path / "index")
    served = load_index(tmp_path / "index", mmap=False)
    assert not served.vectors.flags.writeable and served.codes.flags.writeable  # mapped; read
    assert served.storage == small.storage
    a = small.search(x[:20], 10, 2)
    np.testing.assert_array_equal(served.search(x[:20], 10, 2).ids, a.ids)
    save(compress(served, "auto"), tmp_path / "plain")  # a small index: float32 again
    assert not IndexLayout(tmp_path / "plain").codes.exists()


def test_an_index_saved_before_budgets_loads_as_float32(tmp_path: Path) -> None:
    _, x, index = _catalog()
    save(index, tmp_path / "old")
    meta = IndexLayout(tmp_path / "old").meta
    record = json.loads(meta.read_text())
    del record["storage"]
    meta.write_text(json.dumps(record))
    old = load_index(tmp_path / "old", mmap=False)
    assert old.storage is None and old.codes is None
    np.testing.assert_array_equal(old.search(x[:5], 5, 2).ids, index.search(x[:5], 5, 2).ids)


@pytest.mark.slow
def test_a_compressed_run_is_queried_served_and_refreshed(
    tmp_path: Path, demo_catalog: Path
) -> None:
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow
    from vasrch.search.searcher import open_run
    from vasrch.workspace.runs import read_manifest

    catalog = tmp_path / "catalog"
    shutil.copytree(demo_catalog, catalog)
    search = {"max_bytes_per_photo": 64 + 48, "probes": 2}
    config = write_config(tmp_path, small_run_config(catalog, search=search))
    trained = train_flow(str(config))
    manifest = read_manifest(trained.run_dir)
    assert manifest.vectors.method == "pca-int8" and manifest.vectors.dims == 48
    assert "max_bytes_per_photo = 112" in manifest.vectors.reason
    assert not (trained.run_dir / "scratch").exists()  # trained streamed, its files removed

    searcher = open_run(tmp_path / "ws", in_memory=True)
    index = searcher.index
    assert index.codes.shape == (48, 48) and not index.vectors.flags.writeable
    photo = "shoe/shoe_000.png"
    found = searcher.search_ids([photo], top_n=5)
    plain = replace(index, codes=None, codec=None)  # 48 photos: the shortlist is every row
    expected = plain.result_of(
        *plain.search_rows(index.vectors[index.rows_of([photo])], 5, 2, index.rows_of([photo]))
    )
    assert found.ids.tolist() == expected.ids.tolist()

    with serving(tmp_path / "ws", top_n=5) as server:
        status, body = upload(server, catalog_image(catalog, photo), ctype="image/png")
    assert status == 200, body
    assert body["results"][0]["image_id"] == photo

    shutil.copy(catalog / "hat" / "hat_000.png", catalog / "hat" / "hat_new.png")
    refreshed = refresh_flow(str(config))
    child = RunLayout(refreshed.run_dir)
    after = load_index(child.index.root)
    assert after.n == 49 and after.codes.shape == (49, 48)
    np.testing.assert_array_equal(after.codec.components, index.codec.components)
    assert read_manifest(refreshed.run_dir).vectors.method == "pca-int8"
    rows = after.rows_of(["hat/hat_new.png", "hat/hat_000.png"])  # the same bytes
    assert set(after.search_rows(after.vectors[rows[:1]], 2, after.k)[0][0]) == set(rows)
