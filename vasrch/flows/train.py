"""The `train` flow: scan, extract, diagnose, cluster, index, evaluate, bulk, publish a run."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow

from vasrch import runs
from vasrch.backbones import BackboneSpec, fingerprint
from vasrch.catalog import STATUSES, diff_catalog, write_catalog
from vasrch.config import Config, load_config
from vasrch.features import cache_dir_for
from vasrch.fileio import write_text_atomic
from vasrch.flows.bulk import bulk_stage
from vasrch.flows.extract import extract_stage
from vasrch.runner import use_runner
from vasrch.tasks.train import (
    diagnostics_task,
    evaluate_task,
    load_vectors_task,
    publish_run_task,
    report_task,
    train_index_task,
)
from vasrch.training import choose_k


def previous_catalog(workspace: Path) -> pd.DataFrame | None:
    """The catalog table of the LATEST run, if any (for incremental scans and diffs)."""
    latest = runs.latest_run_id(workspace)
    path = runs.runs_dir(workspace) / str(latest) / "catalog.parquet"
    return pd.read_parquet(path) if latest and path.is_file() else None


def train_stage(
    cfg: Config,
    init_centroids: np.ndarray | None = None,
    gate: Any = None,
) -> dict[str, Any]:
    """Everything from the catalog folder to a complete run folder; `gate(manifest)` returns
    None to promote the run to LATEST or the reason not to."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    previous = previous_catalog(cfg.workspace)
    catalog, summary = extract_stage(cfg, previous)
    timings["extract_s"] = time.perf_counter() - clock

    spec = BackboneSpec.from_config(cfg.features)
    fp = fingerprint(spec)
    run_id = runs.new_run_id()
    staging = runs.start_run(cfg.workspace, run_id)
    write_text_atomic(staging / "config.yaml", cfg.to_yaml())
    table = diff_catalog(previous, catalog)
    write_catalog(
        table[table["status"] != "gone"].reset_index(drop=True), staging / "catalog.parquet"
    )

    clock = time.perf_counter()
    ids, vectors = load_vectors_task(str(cache_dir_for(cfg.workspace, fp)), catalog)
    diag = diagnostics_task(vectors, cfg, str(staging / "diagnostics"))
    timings["diagnostics_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    k = choose_k(cfg.clustering, diag.suggested_k, len(ids))
    index = train_index_task(ids, vectors, k, fp, cfg, str(staging), init_centroids)
    timings["train_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    metrics = evaluate_task(index, ids, vectors, catalog, cfg)
    timings["evaluate_s"] = time.perf_counter() - clock

    bulk: dict[str, Any] | None = None
    if cfg.bulk.enabled:
        clock = time.perf_counter()
        bulk_cfg = cfg.bulk
        if bulk_cfg.probes == "auto":
            bulk_cfg = bulk_cfg.model_copy(update={"probes": int(metrics["probes"])})
        bulk = bulk_stage(staging / "index", staging / "bulk", bulk_cfg, list(ids))
        timings["bulk_s"] = time.perf_counter() - clock
    report_task(str(staging), catalog, diag, index.k, metrics, f"vasrch run {run_id}")

    counts = {
        "catalog": len(catalog),
        "indexed": len(ids),
        "rejected": summary.rejected,
        "extracted_new": summary.new,
        "reused": summary.reused,
        **{s: int((table["status"] == s).sum()) for s in STATUSES},
    }
    manifest: dict[str, Any] = {
        "status": "complete",
        "config": cfg.model_dump(mode="json"),
        "backbone": asdict(spec),
        "fingerprint": fp,
        "suggested_k": diag.suggested_k,
        "suggest_rule": diag.rule,
        "k": index.k,
        "probes": int(metrics["probes"]),
        "counts": counts,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "metrics": metrics,
        "bulk": bulk,
    }
    reason = gate(manifest) if gate else None
    if reason:
        manifest["status"] = "rejected"
        manifest["reason"] = reason
    final = publish_run_task(str(staging), str(cfg.workspace), manifest, reason is None)
    return {
        "run_id": run_id,
        "run_dir": final,
        "promoted": reason is None,
        "reason": reason,
        "suggested_k": diag.suggested_k,
        "k": index.k,
        "metrics": metrics,
        "counts": counts,
        "bulk": bulk,
        "extract": summary.as_dict(),
    }


@flow(name="train")
def train_flow(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a versioned run from the configured catalog and point LATEST at it."""
    cfg = load_config(config_path, overrides)
    with use_runner(cfg.runner):
        return train_stage(cfg)
