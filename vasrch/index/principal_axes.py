"""Exact PCA of a matrix too large for memory: the covariance summed a chunk of rows at a time.

Imports NumPy alone, so the query path (the int8 codec) loads no scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

CHUNK_ROWS = 65_536  # rows read at once


def sample_rows(n: int, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """All n rows, or a sorted seeded sample of `max_rows` of them (None: all)."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


@dataclass(frozen=True)
class PrincipalAxes:
    """An exact PCA: the mean, every direction (rows, by falling variance, each signed so its
    largest coordinate is positive, as scikit-learn signs them) and each one's variance."""

    mean: np.ndarray  # (d,) float32
    directions: np.ndarray  # (d, d) float32
    variances: np.ndarray  # (d,) float64

    def explained_variance_ratio(self, dims: int) -> np.ndarray:
        """The share of the total variance each of the `dims` leading directions holds."""
        return (self.variances[:dims] / max(self.variances.sum(), 1e-30)).astype(np.float32)


def principal_axes(
    vectors: np.ndarray, rows: np.ndarray, chunk_rows: int = CHUNK_ROWS
) -> PrincipalAxes:
    """The exact PCA of `vectors[rows]`, read `chunk_rows` rows at a time from a matrix that may
    be memory-mapped: memory holds d x d, not the rows. The covariance is accumulated about the
    first chunk's mean (float32 products, float64 sums), so a large common mean, which every
    CNN feature has, costs no precision."""
    if len(rows) == 0:
        raise ValueError("principal_axes needs at least one row")
    d = vectors.shape[1]
    shift: np.ndarray | None = None
    total = np.zeros(d, dtype=np.float64)
    products = np.zeros((d, d), dtype=np.float64)
    # one BLAS thread, as for k-means: threads spinning against each other on a busy 2-core
    # machine made the 1,280-d eigendecomposition 5x slower
    with threadpool_limits(1):
        for start in range(0, len(rows), chunk_rows):
            block = np.asarray(vectors[rows[start : start + chunk_rows]], dtype=np.float32)
            if shift is None:
                shift = block.mean(axis=0, dtype=np.float64)
            block -= shift.astype(np.float32)
            total += block.sum(axis=0, dtype=np.float64)
            products += block.T @ block
        n = len(rows)
        offset = total / n
        covariance = (products - n * np.outer(offset, offset)) / max(n - 1, 1)
        values, vecs = np.linalg.eigh(covariance)
    assert shift is not None  # set by the first chunk
    directions = vecs[:, ::-1].T
    largest = directions[np.arange(d), np.abs(directions).argmax(axis=1)]
    directions = directions * np.where(largest < 0, -1.0, 1.0)[:, None]
    return PrincipalAxes(
        mean=(shift + offset).astype(np.float32),
        directions=directions.astype(np.float32),
        variances=np.maximum(values[::-1], 0.0),
    )
