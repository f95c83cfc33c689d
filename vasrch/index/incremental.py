"""An index kept up to date without retraining, and how far it has drifted from its training.

New photos are assigned to the trained centroids (as an IVF index adds vectors: the rule that
assigned the trained ones), removed photos are dropped, and the retrieval steps of the run
(projection, database-side augmentation, query expansion) are applied to the whole result as
training applies them. The clusters themselves never move: once the catalog has drifted far
from what they were trained on, `Drift` says so and a retrain is due.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from vasrch.config import RefreshConfig, SearchConfig
from vasrch.features.matrices import scratch_file
from vasrch.index.figures import Drift
from vasrch.index.search_index import SearchIndex, augment_database, build_index, compress

_ASSIGN_ROWS = 8192


def assign(index: SearchIndex, vectors: np.ndarray) -> np.ndarray:
    """The cluster of each feature-space vector: its nearest centroid in the index space, as
    `KMeans.predict` assigned the trained photos (empty clusters included)."""
    x = index.prepare_queries(vectors)
    half_sq = 0.5 * np.einsum("ij,ij->i", index.centroids, index.centroids)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], _ASSIGN_ROWS):
        block = x[start : start + _ASSIGN_ROWS]
        labels[start : start + len(block)] = np.argmax(block @ index.centroids.T - half_sq, 1)
    return labels


def refresh_index(
    parent: SearchIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    search: SearchConfig,
    prints: np.ndarray | None = None,
    scratch: Path | None = None,
) -> SearchIndex:
    """The index of the photos `ids` (feature-space `vectors`, raw `prints`) on `parent`'s
    clusters: photos already in `parent` keep their cluster, new ones get their nearest
    centroid, and `search`'s retrieval steps (the run's) are applied again; the vectors are held
    within `search.max_bytes_per_photo`, coded with `parent`'s codec when it has one. With a
    `scratch` folder the grouped and augmented matrices and the prepared prints are files
    there, memory-mapped, as in a streamed train (training.fit_index)."""
    rows = parent.rows_of(ids)
    new = rows < 0
    labels = np.where(new, -1, parent.labels[rows]).astype(np.int64)
    if new.any():
        labels[new] = assign(parent, vectors[new])
    index = build_index(
        ids,
        vectors,
        parent.centroids,
        labels,
        parent.fingerprint,
        parent.projection,
        expansion=parent.expansion,
        expansion_alpha=parent.expansion_alpha,
        prints=prints,
        out=scratch_file(scratch, "grouped.npy"),
    )
    if search.database_augmentation:
        with threadpool_limits(1):
            index = augment_database(
                index,
                search.database_augmentation,
                search.expansion_alpha,
                out=scratch_file(scratch, "augmented.npy"),
            )
    return compress(index, search.max_bytes_per_photo, parent.codec)


def size_spread(index: SearchIndex) -> float:
    """Coefficient of variation of the cluster sizes (0: all equal)."""
    sizes = index.cluster_sizes.astype(np.float64)
    mean = sizes.mean()
    return float(sizes.std() / mean) if mean > 0 else 0.0


def measure_drift(
    added_since_training: int,
    n: int,
    spread: float,
    trained_spread: float,
    recall: float,
    target_recall: float,
    limits: RefreshConfig,
) -> Drift:
    """The drift figures, with a reason for each of `limits` they pass."""
    share = added_since_training / n if n else 0.0
    reasons = []
    if share > limits.max_added_share:
        reasons.append(
            f"{share:.0%} of the photos were added since training "
            f"(refresh.max_added_share {limits.max_added_share:.0%})"
        )
    if trained_spread > 0 and spread > trained_spread * limits.max_size_spread_growth:
        reasons.append(
            f"cluster sizes spread {spread / trained_spread:.2f}x as much as at training "
            f"(refresh.max_size_spread_growth {limits.max_size_spread_growth:g})"
        )
    floor = target_recall - limits.recall_margin
    if recall < floor:
        reasons.append(
            f"recall@10 re-checked at {recall:.3f}, below {floor:.3f} "
            f"(search.target_recall - refresh.recall_margin)"
        )
    return Drift(
        added_since_training=added_since_training,
        added_share=share,
        size_spread=spread,
        trained_size_spread=trained_spread,
        recall_at_10=recall,
        target_recall=target_recall,
        reasons=tuple(reasons),
    )
