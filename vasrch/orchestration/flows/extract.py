"""The `extract` flow: catalog folder to feature shards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, unmapped

from vasrch.catalog.downloads import FetchPolicy
from vasrch.catalog.scan import Scan, ScanOptions
from vasrch.catalog.sources import Fetching
from vasrch.config import Config, FeaturesConfig, load_config
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.features.extraction import ChunkResult, ExtractSummary, cache_dir_for, summarize
from vasrch.layout import WorkspaceLayout
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import task_store, use_runner
from vasrch.orchestration.tasks.extract import (
    extract_chunk_task,
    plan_chunks_task,
    publish_extract_summary,
    scan_catalog_task,
)
from vasrch.orchestration.timing import timed
from vasrch.workspace.mirror import workspace_writer
from vasrch.workspace.store_folders import StoreFolder


def fetching(cfg: Config) -> Fetching:
    """How the config's remote photos are read (store options, cache_dir, downloads)."""
    c = cfg.catalog
    policy = FetchPolicy(c.download_timeout_s, c.download_retries, host_rate=c.host_rate_limit)
    return Fetching(c.storage_options, c.cache_dir, c.download_workers, policy)


def scan_options(cfg: Config, catalog: bool = True) -> ScanOptions:
    """How the config's folders are scanned: the file size limit, the symlink rule and, for the
    catalog itself, its manifest, how remote photos are read and their listing record."""
    source = f"{cfg.catalog.path}\n{cfg.catalog.manifest or ''}"
    return ScanOptions(
        cfg.features.max_file_bytes,
        cfg.catalog.follow_external_symlinks,
        cfg.catalog.manifest if catalog else None,
        cfg.catalog.allow_absolute_paths,
        fetching(cfg),
        WorkspaceLayout(cfg.workspace).listing(source) if catalog else None,
    )


def embed_folder(
    folder: Path | str,
    *,
    features: FeaturesConfig,
    cache_dir: str,
    options: ScanOptions,
    demo: bool = False,
    previous: pd.DataFrame | None = None,
    shared: StoreFolder | None = None,
    streamed: bool = False,
) -> tuple[Scan, list[ChunkResult]]:
    """Scan a folder (or store, or manifest), then extract what the feature cache lacks,
    chunks mapped as tasks. `streamed`: photos the scan downloads are embedded as they arrive,
    in this process (scan_catalog_task). With `shared`, the tasks write their shards to that
    folder of the workspace's store (read nothing from this machine's disk), then they are
    gathered into `cache_dir`."""
    scan, done = scan_catalog_task(
        folder=folder,
        options=options,
        demo=demo,
        previous=previous,
        features=features if streamed else None,
        cache_dir=cache_dir if streamed else None,
    )
    chunks = plan_chunks_task(
        catalog=scan.table, cache_dir=cache_dir, shard_size=features.shard_size
    )
    futures = extract_chunk_task.map(
        rows=chunks,
        spec=unmapped(BackboneSpec.from_config(features)),
        features=unmapped(features),
        cache=unmapped(cache_dir if shared is None else shared),
        fetching=unmapped(
            options.fetching if shared is None else replace(options.fetching, cache_dir=None)
        ),
    )
    results = futures.result()
    if shared is not None:
        shared.gather(Path(cache_dir))
    return scan, [*done, *results]


def shared_features(cfg: Config, cache_dir: str) -> StoreFolder | None:
    """The store folder of the feature cache `cache_dir` when extraction tasks write there
    (task_store)."""
    store = task_store(cfg)
    return None if store is None else StoreFolder.mirroring(store, cfg.workspace, Path(cache_dir))


def extract_stage(
    cfg: Config, *, previous: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, ExtractSummary]:
    """Scan, then extract what is missing, chunks mapped as tasks; returns (catalog table of
    the scanned images, summary). On the thread runner, photos the scan downloads are embedded
    as they arrive (one download each); on Dask, the workers' chunks download them again."""
    fp = fingerprint(BackboneSpec.from_config(cfg.features))
    cache_dir = str(cache_dir_for(cfg.workspace, fp))
    timings: dict[str, float] = {}
    with timed("extract", timings):
        scan, results = embed_folder(
            cfg.catalog.path,
            features=cfg.features,
            cache_dir=cache_dir,
            options=scan_options(cfg),
            demo=cfg.catalog.demo,
            previous=previous,
            shared=shared_features(cfg, cache_dir),
            streamed=cfg.runner.type == "thread",
        )
    summary = summarize(scan, results, cache_dir, fp, timings["extract"])
    publish_extract_summary(summary)
    return scan.table, summary


@flow(name="extract", flow_run_name=run_name("extract"))
def extract_flow(config_path: str, overrides: dict[str, Any] | None = None) -> ExtractSummary:
    """Turn the configured catalog folder into feature shards in the workspace; returns the
    counts, every rejected image (image_id, reason, retry) and the scan's folder warnings."""
    cfg = load_config(config_path, overrides)
    lock = workspace_writer(cfg, "extract flow")
    with lock, use_runner(cfg.runner):
        _, summary = extract_stage(cfg)
    return summary
