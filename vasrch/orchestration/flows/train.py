"""The `train` flow: scan, extract, diagnose, cluster, index, evaluate, bulk, publish a run."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow
from prefect.logging import get_run_logger

from vasrch.atomic_files import write_text_atomic
from vasrch.catalog.products import Products
from vasrch.catalog.scan import diff_catalog, write_catalog
from vasrch.config import Config, GatesConfig, load_config
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.features.extraction import ExtractSummary, cache_dir_for
from vasrch.index.training import catalog_labels, choose_k
from vasrch.layout import RunLayout
from vasrch.orchestration.flows.bulk import bulk_stage
from vasrch.orchestration.flows.extract import embed_folder, extract_stage, scan_options
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import use_runner
from vasrch.orchestration.tasks.train import (
    diagnostics_task,
    evaluate_task,
    held_out_task,
    load_vectors_task,
    publish_run_task,
    report_task,
    run_artifacts_task,
    train_index_task,
)
from vasrch.search.parameters import resolve_search_params
from vasrch.workspace import runs
from vasrch.workspace.lock import workspace_lock
from vasrch.workspace.promotion import gate_failure


def _previous_catalog(cfg: Config) -> pd.DataFrame | None:
    """LATEST's verified catalog table; None (every image hashed again, every image "new")
    with a logged warning when LATEST is damaged."""
    try:
        return runs.previous_catalog(cfg.workspace)
    except runs.RunError as err:
        get_run_logger().warning("not using the previous run's catalog: %s", err)
        return None


def train_stage(
    cfg: Config,
    init_centroids: np.ndarray | None = None,
    gates: GatesConfig | None = None,
) -> dict[str, Any]:
    """Everything from the catalog folder to a complete run folder; with `gates`, the run is
    promoted to LATEST only if it passes them (else recorded as rejected, with the reason)."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    previous = _previous_catalog(cfg)
    catalog, summary = extract_stage(cfg, previous)
    timings["extract_s"] = time.perf_counter() - clock
    run_id = runs.new_run_id()
    staging = RunLayout(runs.start_run(cfg.workspace, run_id))
    try:
        return _build_run(
            cfg, previous, catalog, summary, timings, run_id, staging, init_centroids, gates
        )
    except BaseException:
        shutil.rmtree(staging.root, ignore_errors=True)
        raise


def _build_run(
    cfg: Config,
    previous: pd.DataFrame | None,
    catalog: pd.DataFrame,
    summary: ExtractSummary,
    timings: dict[str, float],
    run_id: str,
    staging: RunLayout,
    init_centroids: np.ndarray | None,
    gates: GatesConfig | None,
) -> dict[str, Any]:
    """The run's files in `staging`, then the published run (train_stage's body)."""
    spec = BackboneSpec.from_config(cfg.features)
    fp = fingerprint(spec)
    write_text_atomic(staging.config, cfg.to_yaml())
    table = diff_catalog(previous, catalog)
    write_catalog(table[table["status"] != "gone"].reset_index(drop=True), staging.catalog)

    clock = time.perf_counter()
    ids, vectors, prints = load_vectors_task(str(cache_dir_for(cfg.workspace, fp)), catalog)
    diag = diagnostics_task(vectors, cfg.clustering, str(staging.diagnostics.root))
    timings["diagnostics_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    k = choose_k(cfg.clustering, diag.suggested_k, len(ids))
    products = Products.from_catalog(catalog)
    index = train_index_task(
        ids,
        vectors,
        k,
        fp,
        cfg.clustering,
        cfg.search,
        str(staging.root),
        products,
        init_centroids,
        prints,
    )
    timings["train_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    held_out = None
    if cfg.evaluation.queries is not None:
        cache_dir = str(cache_dir_for(cfg.workspace, fp))
        queries, _ = embed_folder(
            cfg.evaluation.queries, cfg.features, cache_dir, scan_options(cfg, catalog=False)
        )
        held_out = held_out_task(
            queries.table, catalog, cache_dir, cfg.evaluation.queries_labels_csv
        )
    labels = catalog_labels(catalog, cfg.catalog.labels_csv)
    evaluation = evaluate_task(index, ids, vectors, labels, cfg.search, cfg.evaluation, held_out)
    metrics = evaluation.metrics
    timings["evaluate_s"] = time.perf_counter() - clock

    bulk: dict[str, Any] | None = None
    if cfg.bulk.enabled:
        clock = time.perf_counter()
        params = resolve_search_params(
            k=index.k, n=index.n, configured=cfg.bulk, calibrated=int(metrics["probes"])
        )
        bulk = bulk_stage(
            staging.index.root,
            staging.bulk,
            params,
            cfg.bulk.duplicate_threshold,
            cfg.bulk.duplicate_candidates,
            cfg.bulk.chunk_rows,
            cfg.bulk.csv,
            catalog,
        )
        timings["bulk_s"] = time.perf_counter() - clock
    report_task(str(staging.root), catalog, diag, index.k, evaluation, f"vasrch run {run_id}")

    counts = runs.run_counts(
        table, len(ids), summary.seen, summary.rejected, summary.new, summary.reused
    )
    manifest = runs.run_manifest(
        config=cfg.model_dump(mode="json"),
        backbone=asdict(spec),
        fingerprint=fp,
        suggested_k=diag.suggested_k,
        suggest_rule=diag.rule,
        k=index.k,
        metrics=metrics,
        calibrated_on=evaluation.calibrated_on,
        counts=counts,
        timings=timings,
        bulk=bulk,
        sweep_note=diag.note,
    )
    reason = gate_failure(gates, manifest) if gates else None
    if reason:
        manifest = runs.reject_run(manifest, reason)
    final = publish_run_task(str(staging.root), str(cfg.workspace), manifest, reason is None)
    run_artifacts_task(final, diag)
    return {
        "run_id": run_id,
        "run_dir": final,
        "promoted": reason is None,
        "reason": reason,
        "suggested_k": diag.suggested_k,
        "k": index.k,
        "metrics": metrics,
        "calibrated_on": evaluation.calibrated_on,
        "sweep_note": diag.note,
        "counts": counts,
        "bulk": bulk,
        "extract": summary.as_dict(),
    }


@flow(name="train", flow_run_name=run_name("train"))
def train_flow(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a versioned run from the configured catalog and point LATEST at it.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        overrides: Config fields to change for this run, as dotted keys, e.g.
            {"clustering.num_clusters": 12}.
    """
    cfg = load_config(config_path, overrides)
    lock = workspace_lock(cfg.workspace, "train flow", cfg.runs.lock_timeout_s)
    with lock, use_runner(cfg.runner):
        return train_stage(cfg)
