"""Tasks of the bulk stage: neighbours per cluster chunk, near-duplicate groups, CSV export."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from threadpoolctl import threadpool_limits

from vasrch import progress
from vasrch.atomic_files import atomic_path
from vasrch.bulk.neighbours import bulk_neighbours_for_clusters, product_neighbours
from vasrch.catalog.products import Products
from vasrch.duplicates.groups import group_summary, groups_of_folder
from vasrch.index.search_index import SearchIndex, load_index
from vasrch.layout import BulkLayout
from vasrch.pages.spreadsheets import defuse_formulas
from vasrch.workspace.store_folders import StoreFiles, StoreFolder, writing_into


@functools.lru_cache(maxsize=2)
def _index(folder: str) -> SearchIndex:
    """The index of a run, memory-mapped once per worker process."""
    return load_index(folder)


@task(name="bulk-chunk", cache_policy=NO_CACHE, retries=1)
def bulk_chunk_task(
    index_dir: str | StoreFiles,
    clusters: list[int],
    top_n: int,
    probes: int,
    out: str | StoreFolder,
    name: str,
    candidates: int | None = None,
    hidden: frozenset[str] = frozenset(),
) -> int:
    """Neighbours of every member of `clusters` (top_n and probes already resolved against the
    index; the first `candidates` with their duplicate score; `hidden` products never among
    them), written as the Parquet shard `name` of `out`. The index is a local folder, or files
    of the workspace's store copied (verified) into this worker once; `out` a local folder, or
    a folder of the store written through a temporary folder of this worker. BLAS runs one
    thread per task: concurrent chunks already fill the cores, and OpenBLAS threads spinning
    against each other made bulk several times slower on a busy 2-core machine."""
    index = _index(index_dir if isinstance(index_dir, str) else str(index_dir.local_copy()))
    owners = index.ids if index.products is None else index.products
    allowed = ~np.isin(owners, list(hidden)) if hidden else None
    with threadpool_limits(1, "blas"):
        frame = bulk_neighbours_for_clusters(
            index, clusters, top_n, probes, candidates=candidates, allowed=allowed
        )
    with writing_into(out) as folder, atomic_path(folder / name) as tmp:
        frame.to_parquet(tmp, index=False)
    progress.report("bulk", int(sum(index.cluster_sizes[c] for c in clusters)))
    return len(frame)


@task(name="near-duplicates", cache_policy=NO_CACHE)
def duplicates_task(out_dir: str, threshold: float, catalog: pd.DataFrame) -> pd.DataFrame:
    """Group the neighbour pairs whose duplicate score is at least `threshold` (star groups,
    vasrch.duplicates.groups; representatives preferred in catalog order), each photo named with its
    product; write duplicates.parquet and publish the groups (first 100) as a table artifact."""
    out = BulkLayout(Path(out_dir))
    groups = groups_of_folder(out, threshold, catalog["image_id"].tolist())
    groups.insert(2, "product_id", Products.from_catalog(catalog).of(groups["image_id"]))
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


@task(name="product-neighbours", cache_policy=NO_CACHE)
def product_neighbours_task(out_dir: str, top_n: int) -> int:
    """product_neighbours.parquet: the shards' photo answers merged per product (the whole
    neighbour table is read into memory, its ids as categories)."""
    out = BulkLayout(Path(out_dir))
    table = ds.dataset(out.neighbour_shards(), format="parquet").to_table()
    frame = table.to_pandas(strings_to_categorical=True)
    products = product_neighbours(frame, top_n)
    with atomic_path(out.products) as tmp:
        products.to_parquet(tmp, index=False)
    get_run_logger().info("%d product neighbour rows", len(products))
    return len(products)


@task(name="export-csv", cache_policy=NO_CACHE)
def export_csv_task(out_dir: str, raw: bool = False) -> str:
    """neighbours.csv: the product neighbours when products have several photos, else the
    neighbour shards (where photos are the products), streamed; cells a spreadsheet would run
    as formulas are defused unless `raw`."""
    out = BulkLayout(Path(out_dir))
    sources = [out.products] if out.products.is_file() else out.neighbour_shards()
    with atomic_path(out.csv) as tmp:
        for i, shard in enumerate(sources):
            frame = pq.read_table(shard).to_pandas()
            cells = frame if raw else defuse_formulas(frame)
            cells.to_csv(tmp, mode="a", header=i == 0, index=False)
    return str(out.csv)
