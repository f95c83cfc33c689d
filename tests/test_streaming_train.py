"""fit_index and refresh_index streamed: vectors memory-mapped, grouped and augmented into
scratch files a few rows at a time, prints prepared into files, give the index the in-memory
path gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vasrch.config import ClusteringConfig, SearchConfig
from vasrch.index.training import fit_index


def _vectors(n: int = 1200, dim: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    x = centres[rng.integers(0, 12, n)] + 0.7 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_streamed_fit_equals_the_in_memory_fit(tmp_path: Path) -> None:
    x = _vectors()
    ids = np.array([f"p{i:05d}" for i in range(len(x))], dtype=object)
    np.save(tmp_path / "vectors.npy", x)
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    # KMeans on a 600-row sample; 32 int8 PCA values a photo instead of 48 float32
    cfg = ClusteringConfig(max_train_rows=600)
    search = SearchConfig(max_bytes_per_photo=64 + 32)
    memory, _ = fit_index(ids, x, 20, "fp", cfg, search=search)
    scratch = tmp_path / "scratch"
    streamed, _ = fit_index(
        ids, mapped, 20, "fp", cfg, search=search, scratch=scratch, chunk_rows=7
    )

    assert isinstance(streamed.vectors, np.memmap) and not isinstance(memory.vectors, np.memmap)
    assert sorted(p.name for p in scratch.iterdir()) == ["augmented.npy"]
    assert streamed.ids.tolist() == memory.ids.tolist()
    np.testing.assert_array_equal(streamed.offsets, memory.offsets)
    np.testing.assert_array_equal(streamed.centroids, memory.centroids)
    np.testing.assert_array_equal(streamed.vectors, memory.vectors)
    np.testing.assert_array_equal(streamed.distances, memory.distances)
    assert streamed.storage == memory.storage and streamed.storage.method == "pca-int8"
    np.testing.assert_array_equal(streamed.codes, memory.codes)
    queries = _vectors(20, seed=1)
    a, b = streamed.search(queries, 10, 4), memory.search(queries, 10, 4)
    assert (a.ids == b.ids).all()


def test_streamed_prints_equal_the_in_memory_ones(tmp_path: Path) -> None:
    from vasrch.features.duplicate_prints import PREPARED, PRINT_BYTES

    x = _vectors(300)
    ids = np.array([f"p{i:05d}" for i in range(len(x))], dtype=object)
    raw = np.random.default_rng(2).integers(0, 256, (len(x), PRINT_BYTES), dtype=np.uint8)
    np.save(tmp_path / "prints.npy", raw)
    mapped = np.load(tmp_path / "prints.npy", mmap_mode="r")
    cfg, search = ClusteringConfig(max_train_rows=200), SearchConfig()
    memory, _ = fit_index(ids, x, 8, "fp", cfg, search=search, prints=raw)
    scratch = tmp_path / "scratch"
    streamed, _ = fit_index(
        ids, x, 8, "fp", cfg, search=search, prints=mapped, scratch=scratch, chunk_rows=7
    )

    for name in PREPARED:
        held, spilled = getattr(memory.prints, name), getattr(streamed.prints, name)
        assert isinstance(spilled, np.memmap) and not isinstance(held, np.memmap)
        np.testing.assert_array_equal(spilled, held)
    assert sorted(p.name for p in (scratch / "grouped_prints").iterdir()) == sorted(
        f"{name}.npy" for name in PREPARED
    )


def test_a_streamed_refresh_equals_the_in_memory_one(tmp_path: Path) -> None:
    from vasrch.features.duplicate_prints import PREPARED, PRINT_BYTES
    from vasrch.index.incremental import refresh_index

    x = _vectors(400)
    ids = np.array([f"p{i:05d}" for i in range(len(x))], dtype=object)
    prints = np.random.default_rng(3).integers(0, 256, (len(x), PRINT_BYTES), dtype=np.uint8)
    search = SearchConfig(max_bytes_per_photo=64 + 32)
    parent, _ = fit_index(ids[:300], x[:300], 8, "fp", ClusteringConfig(), search=search)
    # 100 photos added, 50 removed
    kept = slice(50, 400)
    memory = refresh_index(parent, ids[kept], x[kept], search, prints[kept])
    np.save(tmp_path / "vectors.npy", x[kept])
    scratch = tmp_path / "scratch"
    streamed = refresh_index(
        parent,
        ids[kept],
        np.load(tmp_path / "vectors.npy", mmap_mode="r"),
        search,
        prints[kept],
        scratch,
    )

    assert isinstance(streamed.vectors, np.memmap) and not isinstance(memory.vectors, np.memmap)
    assert streamed.ids.tolist() == memory.ids.tolist()
    np.testing.assert_array_equal(streamed.offsets, memory.offsets)
    np.testing.assert_array_equal(streamed.vectors, memory.vectors)
    np.testing.assert_array_equal(streamed.codes, memory.codes)
    for name in PREPARED:
        np.testing.assert_array_equal(getattr(streamed.prints, name), getattr(memory.prints, name))
