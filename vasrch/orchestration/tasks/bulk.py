"""Tasks of the bulk stage: neighbours per cluster chunk, near-duplicate groups, CSV export."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from threadpoolctl import threadpool_limits

from vasrch import progress
from vasrch.bulk import bulk_neighbours_for_clusters
from vasrch.duplicates import group_summary, groups_of_folder
from vasrch.fileio import atomic_path
from vasrch.index import SearchIndex, load_index
from vasrch.layout import BulkLayout


@functools.lru_cache(maxsize=2)
def _index(folder: str) -> SearchIndex:
    """The index of a run, memory-mapped once per worker process."""
    return load_index(folder)


@task(name="bulk-chunk", cache_policy=NO_CACHE, retries=1)
def bulk_chunk_task(
    index_dir: str, clusters: list[int], top_n: int, probes: int, out_path: str
) -> int:
    """Neighbours of every member of `clusters` (top_n and probes already resolved against the
    index), written as one Parquet shard. BLAS runs one
    thread per task: concurrent chunks already fill the cores, and OpenBLAS threads spinning
    against each other made bulk several times slower on a busy 2-core machine."""
    index = _index(index_dir)
    with threadpool_limits(1, "blas"):
        frame = bulk_neighbours_for_clusters(index, clusters, top_n, probes)
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    progress.report("bulk", int(sum(index.cluster_sizes[c] for c in clusters)))
    return len(frame)


@task(name="near-duplicates", cache_policy=NO_CACHE)
def duplicates_task(out_dir: str, threshold: float, ids_order: list[str]) -> pd.DataFrame:
    """Group the neighbour pairs whose duplicate score is at least `threshold` (star groups,
    vasrch.duplicates); write duplicates.parquet and publish the groups (first 100) as a table
    artifact."""
    out = BulkLayout(Path(out_dir))
    groups = groups_of_folder(out, threshold, ids_order)
    with atomic_path(out.duplicates) as tmp:
        groups.to_parquet(tmp, index=False)
    summary = group_summary(groups)
    create_table_artifact(
        key="near-duplicates",
        table=summary.head(100).to_dict("records"),
        description=f"{len(summary)} near-duplicate groups (duplicate score >= {threshold}); "
        "each member with its score against the representative; first 100 shown",
    )
    get_run_logger().info("%d near-duplicate groups", len(summary))
    return groups


@task(name="export-csv", cache_policy=NO_CACHE)
def export_csv_task(out_dir: str) -> str:
    """Stream the neighbour shards into one neighbours.csv."""
    out = BulkLayout(Path(out_dir))
    with atomic_path(out.csv) as tmp:
        for i, shard in enumerate(out.neighbour_shards()):
            pq.read_table(shard).to_pandas().to_csv(tmp, mode="a", header=i == 0, index=False)
    return str(out.csv)
