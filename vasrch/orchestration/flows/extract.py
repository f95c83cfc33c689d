"""The `extract` flow: catalog folder to feature shards."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from prefect import flow, unmapped

from vasrch.backbones import BackboneSpec, fingerprint
from vasrch.config import Config, load_config
from vasrch.features import ExtractSummary, cache_dir_for, summarize
from vasrch.orchestration.task_runners import use_runner
from vasrch.orchestration.tasks.extract import (
    extract_chunk_task,
    plan_chunks_task,
    publish_extract_summary,
    scan_catalog_task,
)


def extract_stage(
    cfg: Config, previous: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, ExtractSummary]:
    """Scan, then extract what is missing, chunks mapped as tasks; returns (catalog, summary)."""
    start = time.perf_counter()
    spec = BackboneSpec.from_config(cfg.features)
    fp = fingerprint(spec)
    cache_dir = str(cache_dir_for(cfg.workspace, fp))
    catalog = scan_catalog_task(cfg.catalog.path, cfg.catalog.demo, previous)
    chunks = plan_chunks_task(catalog, cache_dir, cfg.features.shard_size)
    futures = extract_chunk_task.map(
        chunks, unmapped(spec), unmapped(cfg.features), unmapped(cache_dir)
    )
    results = futures.result()
    summary = summarize(catalog, results, cache_dir, fp, time.perf_counter() - start)
    publish_extract_summary(summary)
    return catalog, summary


@flow(name="extract")
def extract_flow(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn the configured catalog folder into feature shards in the workspace."""
    cfg = load_config(config_path, overrides)
    with use_runner(cfg.runner):
        _, summary = extract_stage(cfg)
    return summary.as_dict()
