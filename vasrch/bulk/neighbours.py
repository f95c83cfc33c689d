"""Catalog-wide neighbours in bounded memory, each pair with its duplicate score.

The caller splits the clusters into chunks (`plan_cluster_chunks`), maps
`bulk_neighbours_for_clusters` over them (one task per chunk, each frame written as a Parquet
shard), then groups the near-duplicates (vasrch.duplicates.groups).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from vasrch.features.print_similarity import print_scores
from vasrch.index.search_index import SearchIndex

NEIGHBOUR_COLUMNS = [
    "image_id",
    "product_id",
    "rank",
    "neighbour_id",
    "neighbour_product_id",
    "score",
    "duplicate_score",
]
PRODUCT_NEIGHBOUR_COLUMNS = [
    "product_id",
    "rank",
    "neighbour_product_id",
    "score",
    "image_id",
    "neighbour_image_id",
]


def plan_cluster_chunks(
    index: SearchIndex, max_rows_per_chunk: int, parts: int = 1
) -> list[list[int]]:
    """Consecutive non-empty clusters split into chunks of nearly equal rows, at most
    `max_rows_per_chunk` each, as few as that allows in a multiple of `parts` (the tasks run at
    once): equal chunks end together, where packing each chunk full left a small last one that
    a single worker ran while the others waited.

    Each cut is the cluster boundary nearest an equal share; a cluster larger than the limit
    gets a chunk of its own (bulk search still works through it in bounded blocks).
    """
    if max_rows_per_chunk < 1 or parts < 1:
        raise ValueError(
            f"max_rows_per_chunk and parts must be at least 1, got {max_rows_per_chunk}, {parts}"
        )
    clusters = np.flatnonzero(index.cluster_sizes)
    if len(clusters) == 0:
        return []
    ends = np.cumsum(index.cluster_sizes[clusters])
    count = -(-int(ends[-1]) // max_rows_per_chunk)
    count = -(-count // parts) * parts
    while True:
        shares = ends[-1] * np.arange(1, count) / count
        after = np.minimum(np.searchsorted(ends, shares), len(ends) - 1)
        before = np.maximum(after - 1, 0)
        nearer = np.where(shares - ends[before] < ends[after] - shares, before, after)
        cuts = np.unique(nearer[nearer < len(ends) - 1] + 1)
        chunks = [part.tolist() for part in np.split(clusters, cuts)]
        rows = np.diff(np.concatenate([[0], ends[cuts - 1], ends[-1:]]))
        if all(len(c) == 1 or r <= max_rows_per_chunk for c, r in zip(chunks, rows, strict=True)):
            return chunks
        count += parts


def bulk_neighbours_for_clusters(
    index: SearchIndex,
    clusters: Sequence[int],
    top_n: int = 10,
    probes: int = 1,
    block_rows: int = 4096,
    candidates: int | None = None,
    allowed: np.ndarray | None = None,
) -> pd.DataFrame:
    """Top-n neighbours (self excluded) of every member of `clusters`, scored as a query is;
    with `allowed`, only those stored rows may be neighbours (hidden products left out).

    Returns NEIGHBOUR_COLUMNS, rank from 1, padding dropped: each photo's answers are distinct
    products other than its own (photos, when every product has one); score is the retrieval
    score, duplicate_score the pair's print score (vasrch.features.print_similarity), which neither
    augmentation nor query expansion changes, for the first `candidates` ranks (None: all; NaN
    beyond them, and when the index has no prints). Queries go `block_rows` at
    a time, and each score block is bounded, so the working memory does not grow with the
    catalog; only the returned table grows with the members of the given clusters.
    """
    bad = [c for c in clusters if not 0 <= c < index.k]
    if bad:
        raise ValueError(f"clusters {bad[:5]} are not in the index (k={index.k})")
    rows = np.concatenate(
        [np.arange(index.offsets[c], index.offsets[c + 1]) for c in clusters] or [[]]
    ).astype(np.int64)
    top_n = min(top_n, max(index.n, 1))  # as search_rows caps it
    nbr_rows = np.empty((len(rows), top_n), dtype=np.int64)
    scores = np.empty((len(rows), top_n), dtype=np.float32)
    for start in range(0, len(rows), block_rows):
        block = rows[start : start + block_rows]
        nbr_rows[start : start + len(block)], scores[start : start + len(block)] = (
            index.search_rows(index.vectors[block], top_n, probes, block, block_rows, allowed)
        )
    frame = index.result_of(nbr_rows, scores).to_frame(index.ids[rows])
    products = index.ids if index.products is None else index.products
    found = np.isfinite(scores)
    frame["product_id"] = np.asarray(products.take(np.repeat(rows, found.sum(axis=1))))
    frame["neighbour_product_id"] = np.asarray(products.take(nbr_rows[found]))
    wanted = (np.arange(top_n) < (top_n if candidates is None else candidates))[None, :] & found
    wanted = wanted[found]
    queries = np.repeat(rows, found.sum(axis=1))[wanted]
    duplicate = np.full(len(frame), np.nan, dtype=np.float32)
    duplicate[wanted] = duplicate_scores(index, queries, nbr_rows[found][wanted])
    frame["duplicate_score"] = duplicate
    return frame[NEIGHBOUR_COLUMNS]


def duplicate_scores(index: SearchIndex, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Print score of each pair of stored rows (a[i], b[i]), each unordered pair computed once;
    NaN when the index has no prints."""
    if index.prints is None:
        return np.full(len(a), np.nan, dtype=np.float32)
    low, high = np.minimum(a, b), np.maximum(a, b)
    pairs, inverse = np.unique(low * index.n + high, return_inverse=True)
    scores = print_scores(index.prints, pairs // index.n, pairs % index.n)
    return scores[inverse.ravel()]


def product_neighbours(frame: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Each product's top-n neighbour products over all its photos' answers (NEIGHBOUR_COLUMNS
    rows), a neighbour scored by its best pair of photos: PRODUCT_NEIGHBOUR_COLUMNS, where
    image_id is the product's photo and neighbour_image_id the neighbour's photo that matched."""
    best = frame.sort_values(["score", "image_id"], ascending=[False, True], kind="stable")
    best = best.drop_duplicates(["product_id", "neighbour_product_id"])
    best = best.assign(rank=best.groupby("product_id", sort=False).cumcount() + 1)
    best = best[best["rank"] <= top_n].sort_values(["product_id", "rank"], ignore_index=True)
    return best.rename(columns={"neighbour_id": "neighbour_image_id"})[PRODUCT_NEIGHBOUR_COLUMNS]


def iter_bulk_neighbours(
    index: SearchIndex,
    top_n: int = 10,
    probes: int = 1,
    max_rows_per_chunk: int = 50_000,
    workers: int | None = None,
    block_rows: int = 4096,
    candidates: int | None = None,
) -> Iterator[tuple[list[int], pd.DataFrame]]:
    """Neighbours of the whole catalog, chunk by chunk: yields (clusters, frame) in chunk order;
    the first `candidates` neighbours of each image (None: all) get their duplicate score.

    Runs `workers` chunks at once (default: all cores) on threads, with BLAS held to one thread
    each while the generator runs: numpy releases the GIL in the matrix products and partitions,
    and one BLAS thread per task avoids OpenBLAS threads spinning against each other (on a busy
    2-core machine, 7x slower than this). At most 2 * workers frames are in flight at once.
    """
    workers = workers or os.cpu_count() or 1
    chunks = plan_cluster_chunks(index, max_rows_per_chunk)
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending: deque[tuple[list[int], Future[pd.DataFrame]]] = deque()
        for chunk in chunks:
            pending.append(
                (
                    chunk,
                    pool.submit(
                        bulk_neighbours_for_clusters,
                        index,
                        chunk,
                        top_n,
                        probes,
                        block_rows,
                        candidates,
                    ),
                )
            )
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
