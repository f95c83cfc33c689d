"""The `extract` flow: catalog folder to feature shards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, unmapped

from vasrch.backbones import BackboneSpec, fingerprint
from vasrch.config import Config, FeaturesConfig, load_config
from vasrch.features import ChunkResult, ExtractSummary, cache_dir_for, summarize
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import use_runner
from vasrch.orchestration.tasks.extract import (
    extract_chunk_task,
    plan_chunks_task,
    publish_extract_summary,
    scan_catalog_task,
)
from vasrch.workspace_lock import workspace_lock


def embed_folder(
    folder: Path,
    features: FeaturesConfig,
    cache_dir: str,
    demo: bool = False,
    previous: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[ChunkResult]]:
    """Scan a folder, then extract what the feature cache lacks, chunks mapped as tasks."""
    table = scan_catalog_task(folder, demo, previous)
    chunks = plan_chunks_task(table, cache_dir, features.shard_size)
    spec = BackboneSpec.from_config(features)
    futures = extract_chunk_task.map(
        chunks, unmapped(spec), unmapped(features), unmapped(cache_dir)
    )
    return table, futures.result()


def extract_stage(
    cfg: Config, previous: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, ExtractSummary]:
    """Scan, then extract what is missing, chunks mapped as tasks; returns (catalog, summary)."""
    start = time.perf_counter()
    fp = fingerprint(BackboneSpec.from_config(cfg.features))
    cache_dir = str(cache_dir_for(cfg.workspace, fp))
    catalog, results = embed_folder(
        cfg.catalog.path, cfg.features, cache_dir, cfg.catalog.demo, previous
    )
    summary = summarize(catalog, results, cache_dir, fp, time.perf_counter() - start)
    publish_extract_summary(summary)
    return catalog, summary


@flow(name="extract", flow_run_name=run_name("extract"))
def extract_flow(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn the configured catalog folder into feature shards in the workspace."""
    cfg = load_config(config_path, overrides)
    lock = workspace_lock(cfg.workspace, "extract flow", cfg.runs.lock_timeout_s)
    with lock, use_runner(cfg.runner):
        _, summary = extract_stage(cfg)
    return summary.as_dict()
