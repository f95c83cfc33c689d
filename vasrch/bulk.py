"""Catalog-wide neighbours in bounded memory, near-duplicate pairs and groups.

The caller splits the clusters into chunks (`plan_cluster_chunks`), maps
`bulk_neighbours_for_clusters` over them (one task per chunk, each frame written as a Parquet
shard), then joins the near-duplicate pairs into groups.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from vasrch.index import SearchIndex

NEIGHBOUR_COLUMNS = [
    "image_id",
    "product_id",
    "rank",
    "neighbour_id",
    "neighbour_product_id",
    "score",
]
PRODUCT_NEIGHBOUR_COLUMNS = [
    "product_id",
    "rank",
    "neighbour_product_id",
    "score",
    "image_id",
    "neighbour_image_id",
]
# Neighbour pairs whose retrieval score is within this of the duplicate threshold are candidates,
# re-scored by the cosine of their own vectors (augmentation and expansion shift retrieval scores).
CANDIDATE_MARGIN = 0.15


def plan_cluster_chunks(index: SearchIndex, max_rows_per_chunk: int) -> list[list[int]]:
    """Consecutive non-empty clusters packed into chunks of at most `max_rows_per_chunk` members.

    A cluster larger than the limit gets a chunk of its own (bulk search still works through it
    in bounded blocks).
    """
    if max_rows_per_chunk < 1:
        raise ValueError(f"max_rows_per_chunk must be at least 1, got {max_rows_per_chunk}")
    chunks: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for c, size in enumerate(index.cluster_sizes.tolist()):
        if size == 0:
            continue
        if current and rows + size > max_rows_per_chunk:
            chunks.append(current)
            current, rows = [], 0
        current.append(c)
        rows += size
    if current:
        chunks.append(current)
    return chunks


def bulk_neighbours_for_clusters(
    index: SearchIndex,
    clusters: Sequence[int],
    top_n: int = 10,
    probes: int = 1,
    block_rows: int = 4096,
) -> pd.DataFrame:
    """Top-n neighbours (self excluded) of every member of `clusters`, scored as a query is.

    Returns NEIGHBOUR_COLUMNS, rank from 1, padding dropped: each photo's answers are distinct
    products other than its own (photos, when every product has one). Queries go
    `block_rows` at a time, and each score block is bounded, so the working memory does not grow
    with the catalog; only the returned table grows with the members of the given clusters.
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
            index.search_rows(index.vectors[block], top_n, probes, block, block_rows)
        )
    frame = index.result_of(nbr_rows, scores).to_frame(index.ids[rows])
    products = index.ids if index.products is None else index.products
    found = np.isfinite(scores)
    frame["product_id"] = products[np.repeat(rows, found.sum(axis=1))]
    frame["neighbour_product_id"] = products[nbr_rows[found]]
    return frame[NEIGHBOUR_COLUMNS]


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
) -> Iterator[tuple[list[int], pd.DataFrame]]:
    """Neighbours of the whole catalog, chunk by chunk: yields (clusters, frame) in chunk order.

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
                        bulk_neighbours_for_clusters, index, chunk, top_n, probes, block_rows
                    ),
                )
            )
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def near_duplicate_pairs(neighbours: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Undirected pairs (a < b) whose score is at least `threshold`, best first, deduplicated."""
    hits = neighbours[neighbours["score"] >= threshold]
    left = hits["image_id"].to_numpy(dtype=object)
    right = hits["neighbour_id"].to_numpy(dtype=object)
    pairs = pd.DataFrame(
        {
            "a": np.where(left < right, left, right),
            "b": np.where(left < right, right, left),
            "score": hits["score"].to_numpy(dtype=np.float32),
        }
    )
    pairs = pairs[pairs["a"] != pairs["b"]]
    pairs = pairs.groupby(["a", "b"], as_index=False, sort=False)["score"].max()
    return pairs.sort_values(["score", "a", "b"], ascending=[False, True, True], ignore_index=True)


def rescore_pairs(pairs: pd.DataFrame, ids: Sequence[str], vectors: np.ndarray) -> pd.DataFrame:
    """The pairs (a, b) scored by the cosine of the two photos' own unit feature vectors (`ids`
    names the rows of `vectors`), not by the retrieval score of a neighbour list: whether two
    photos are near-duplicates does not depend on augmentation or query expansion."""
    position = pd.Index(ids).get_indexer
    a, b = position(pairs["a"].to_numpy()), position(pairs["b"].to_numpy())
    if (a < 0).any() or (b < 0).any():
        raise ValueError("every image of a candidate pair needs its feature vector")
    score = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), 65_536):
        rows = slice(start, start + 65_536)
        score[rows] = np.einsum("ij,ij->i", vectors[a[rows]], vectors[b[rows]])
    return pairs.assign(score=score)


def duplicate_groups(pairs: pd.DataFrame, ids_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Join near-duplicate pairs (a, b, score) into groups: connected components of size >= 2.

    Columns: group_id, image_id, is_representative, mean_similarity. A member's mean similarity
    is the sum of its pair scores within the group divided by (group size - 1), a pair that is
    not in the table counting 0; the representative has the highest, ties going to the id that
    comes first in `ids_order` (e.g. catalog order, so the earliest listing wins) or, without it,
    to the lexicographically smallest id. Group ids run from 0 by size (largest first), then by
    representative id. Rows are ordered by group, representative first, then by id.
    """
    columns = {
        "group_id": "int64",
        "image_id": "object",
        "is_representative": "bool",
        "mean_similarity": "float64",
    }
    if pairs.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    codes, nodes = pd.factorize(pd.concat([pairs["a"], pairs["b"]], ignore_index=True))
    m = len(pairs)
    a, b = codes[:m], codes[m:]
    score = pairs["score"].to_numpy(dtype=np.float64)
    graph = coo_matrix((np.ones(m), (a, b)), shape=(len(nodes), len(nodes))).tocsr()
    _, component = connected_components(graph, directed=False)
    size = np.bincount(component)[component]
    total = np.bincount(a, weights=score, minlength=len(nodes))
    total += np.bincount(b, weights=score, minlength=len(nodes))
    mean_sim = total / np.maximum(size - 1, 1)
    ids = np.asarray(nodes, dtype=object)
    if ids_order is not None:
        position = {image_id: i for i, image_id in enumerate(ids_order)}
        preference = np.array([position.get(i, len(position)) for i in ids], dtype=np.int64)
    else:
        preference = np.zeros(len(ids), dtype=np.int64)
    table = pd.DataFrame(
        {
            "component": component,
            "size": size,
            "image_id": ids,
            "mean_similarity": mean_sim,
            "preference": preference,
        }
    )
    table = table[table["size"] >= 2].sort_values(
        ["component", "mean_similarity", "preference", "image_id"],
        ascending=[True, False, True, True],
    )
    table["is_representative"] = ~table["component"].duplicated()
    reps = table[table["is_representative"]].sort_values(
        ["size", "image_id"], ascending=[False, True]
    )
    group_of = pd.Series(np.arange(len(reps)), index=reps["component"].to_numpy())
    table["group_id"] = group_of.reindex(table["component"].to_numpy()).to_numpy()
    table = table.sort_values(
        ["group_id", "is_representative", "image_id"], ascending=[True, False, True]
    )
    return table[list(columns)].reset_index(drop=True)
