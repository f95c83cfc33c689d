"""The benchmarks' catalog-like vector generator: fitted shape, seeded determinism, chunks."""

from __future__ import annotations

import numpy as np
import pytest

# the generator lives in the repository's benchmarks/ folder, not in the installed package
catalog_vectors = pytest.importorskip(
    "benchmarks.catalog_vectors",
    reason="run from the repository root: benchmarks/ is not installed",
)
fit, generate = catalog_vectors.fit, catalog_vectors.generate


def _real(n: int = 600, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, dim))[rng.integers(0, 6, n)] + 0.3 * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_generated_vectors_are_seeded_unit_rows_in_bounded_chunks() -> None:
    model = fit(_real(), clusters=4, rank=8)
    chunks = list(generate(model, 1000, seed=3, chunk=256))
    assert [len(c) for c in chunks] == [256, 256, 256, 232]
    x = np.concatenate(chunks)
    assert x.shape == (1000, 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)
    again = np.concatenate(list(generate(model, 1000, seed=3, chunk=256)))
    np.testing.assert_array_equal(x, again)
    other = np.concatenate(list(generate(model, 1000, seed=4, chunk=256)))
    assert not np.allclose(x, other)


def test_groups_make_close_siblings() -> None:
    real = _real()
    loose = np.concatenate(list(generate(fit(real, clusters=4, rank=8, grouping=0.0), 800)))
    grouped = np.concatenate(list(generate(fit(real, clusters=4, rank=8, grouping=0.8), 800)))

    def nearest(x: np.ndarray) -> float:
        s = x @ x.T
        np.fill_diagonal(s, -1)
        return float(s.max(axis=1).mean())

    assert nearest(grouped) > nearest(loose) + 0.02
