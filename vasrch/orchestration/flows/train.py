"""The `train` flow: scan, extract, diagnose, cluster, index, evaluate, bulk, publish a run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
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
from vasrch.index.compression import streamed
from vasrch.index.figures import Evaluation
from vasrch.index.search_index import SearchIndex
from vasrch.index.training import Diagnostics, HeldOut, catalog_labels, choose_k, k_reason
from vasrch.layout import RunLayout, WorkspaceLayout
from vasrch.orchestration.flows.bulk import SharedBulk, bulk_stage
from vasrch.orchestration.flows.extract import (
    embed_folder,
    extract_stage,
    fetching,
    scan_options,
    shared_features,
)
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import task_store, use_runner
from vasrch.orchestration.tasks.train import (
    CatalogVectors,
    diagnostics_task,
    evaluate_task,
    held_out_task,
    load_vectors_task,
    publish_run_task,
    report_task,
    run_artifacts_task,
    simulated_queries_task,
    train_index_task,
)
from vasrch.orchestration.timing import timed
from vasrch.search.parameters import resolve_search_params
from vasrch.workspace import runs
from vasrch.workspace.hidden import read_hidden, settle
from vasrch.workspace.mirror import store_of, workspace_writer
from vasrch.workspace.promotion import gate_failure
from vasrch.workspace.rejections import write_rejections
from vasrch.workspace.run_manifest import (
    BulkSummary,
    Calibration,
    Counts,
    Metrics,
    RunManifest,
    RunRecord,
    Timings,
)
from vasrch.workspace.store_folders import StoreFiles, StoreFolder


@dataclass(frozen=True)
class TrainResult:
    """A published run, promoted to LATEST or recorded as rejected (its manifest says which and
    why), and the extraction that fed it."""

    run_dir: Path
    manifest: RunManifest
    extract: ExtractSummary
    backbone_note: str | None = None  # LATEST had another backbone: everything was extracted

    @property
    def run_id(self) -> str:
        """The run's id (its folder's name)."""
        return self.manifest.run_id


@dataclass(frozen=True)
class _Previous:
    """The run LATEST names and its verified catalog table (both None before the first run)."""

    run_id: str | None
    catalog: pd.DataFrame | None


def _previous_run(cfg: Config) -> _Previous:
    """LATEST and its verified catalog table; no catalog (every image hashed again, every image
    "new") with a logged warning when LATEST is damaged."""
    latest = None
    try:
        latest = runs.latest_run_id(cfg.workspace)
        return _Previous(latest, runs.previous_catalog(cfg.workspace))
    except runs.RunError as err:
        get_run_logger().warning("not using the previous run's catalog: %s", err)
        return _Previous(latest, None)


def train_stage(
    cfg: Config,
    *,
    init_centroids: np.ndarray | None = None,
    gates: GatesConfig | None = None,
) -> TrainResult:
    """Everything from the catalog folder to a complete run folder; with `gates`, the run is
    promoted to LATEST only if it passes them (else recorded as rejected, with the reason)."""
    timings: dict[str, float] = {}
    previous = _previous_run(cfg)
    note = backbone_change(cfg, previous.run_id)
    if note:
        get_run_logger().warning(note)
    with timed("extract_s", timings):
        catalog, extract = extract_stage(cfg, previous=previous.catalog)
    run_id = runs.new_run_id()
    staging = RunLayout(runs.start_run(cfg.workspace, run_id))
    try:
        table = diff_catalog(previous.catalog, catalog)
        stage_inputs(staging, cfg=cfg, table=table, extract=extract)
        # a catalog whose budget may compress it trains streamed: its vectors in files
        scratch = None
        if streamed(len(catalog), cfg.search.max_bytes_per_photo):
            scratch = staging.root / "scratch"
        with timed("diagnostics_s", timings):
            vectors = load_vectors_task(
                cache_dir=config_cache_dir(cfg),
                catalog=catalog,
                spill=None if scratch is None else str(scratch / "vectors.npy"),
            )
            diag = diagnostics_task(
                vectors=vectors.vectors,
                clustering=cfg.clustering,
                out_dir=str(staging.diagnostics.root),
            )
        with timed("train_s", timings):
            index = train_index_task(
                vectors=vectors,
                k=choose_k(cfg.clustering, diag.suggested_k, len(vectors.ids)),
                fingerprint=config_fingerprint(cfg),
                clustering=cfg.clustering,
                search=cfg.search,
                run_dir=str(staging.root),
                products=Products.from_catalog(catalog),
                init_centroids=init_centroids,
                scratch=None if scratch is None else str(scratch),
            )
        with timed("evaluate_s", timings):
            evaluation = _evaluate(cfg, catalog=catalog, index=index, vectors=vectors)
        bulk = None
        if cfg.bulk.enabled:
            with timed("bulk_s", timings):
                bulk = bulk_into_run(
                    cfg,
                    staging=staging,
                    index=index,
                    evaluation=evaluation,
                    catalog=catalog,
                    shared=share_staged_index(cfg, staging, run_id),
                )
        if scratch is not None:
            shutil.rmtree(scratch)
        report_task(
            run_dir=str(staging.root),
            catalog=catalog,
            diag=diag,
            k=index.k,
            evaluation=evaluation,
            fetching=fetching(cfg),
            title=f"vasrch run {run_id}",
        )
        record = _record(
            cfg,
            diag=diag,
            index=index,
            evaluation=evaluation,
            counts=Counts.of(table, indexed=len(vectors.ids), extract=extract),
            timings=Timings(**timings),
            bulk=bulk,
        )
        reason = gate_failure(gates, record) if gates else None
        manifest = publish_run_task(
            staging=str(staging.root),
            workspace=str(cfg.workspace),
            record=record.rejected(reason) if reason else record,
            parent_run=previous.run_id,
        )
    except BaseException:
        shutil.rmtree(staging.root, ignore_errors=True)
        raise
    if manifest.promoted:
        settle(cfg.workspace, catalog["product_id"].astype(str), store_of(cfg))
    run_dir = runs.runs_dir(cfg.workspace) / run_id
    run_artifacts_task(run_dir=str(run_dir), diag=diag)
    return TrainResult(run_dir=run_dir, manifest=manifest, extract=extract, backbone_note=note)


def config_fingerprint(cfg: Config) -> str:
    """The fingerprint of the backbone the config asks for."""
    return fingerprint(BackboneSpec.from_config(cfg.features))


def backbone_change(cfg: Config, latest: str | None) -> str | None:
    """What happens when LATEST was built with another backbone than the config asks for (a new
    default, or a changed `features` section); None when it was not, or there is no LATEST."""
    if latest is None:
        return None
    try:
        old = runs.read_manifest(runs.runs_dir(cfg.workspace) / latest, verify=False).fingerprint
    except runs.RunError:
        return None
    new = config_fingerprint(cfg)
    if old == new:
        return None
    return (
        f"backbone changed: LATEST ({latest}) was built with {old}, this config asks for {new}; "
        "every photo is extracted once for it (the old features stay cached, and runs built "
        "with the old backbone keep answering with it)"
    )


def config_cache_dir(cfg: Config) -> str:
    """The feature cache of the config's backbone."""
    return str(cache_dir_for(cfg.workspace, config_fingerprint(cfg)))


def stage_inputs(
    staging: RunLayout, *, cfg: Config, table: pd.DataFrame, extract: ExtractSummary
) -> None:
    """The run's resolved config, its catalog table (the images still present, each with its
    status against the previous run) and its rejections."""
    write_text_atomic(staging.config, cfg.to_yaml())
    write_catalog(table[table["status"] != "gone"].reset_index(drop=True), staging.catalog)
    write_rejections(extract.rejections, staging.rejections)


def _held_out(cfg: Config, *, catalog: pd.DataFrame) -> HeldOut | None:
    """The held-out photos of evaluation.queries, embedded through the feature cache."""
    if cfg.evaluation.queries is None:
        return None
    cache_dir = config_cache_dir(cfg)
    queries, _ = embed_folder(
        cfg.evaluation.queries,
        features=cfg.features,
        cache_dir=cache_dir,
        options=scan_options(cfg, catalog=False),
        shared=shared_features(cfg, cache_dir),
    )
    return held_out_task(
        queries=queries.table,
        catalog=catalog,
        cache_dir=cache_dir,
        labels_csv=cfg.evaluation.queries_labels_csv,
    )


def _evaluate(
    cfg: Config, *, catalog: pd.DataFrame, index: SearchIndex, vectors: CatalogVectors
) -> Evaluation:
    """Calibrated probes and figures, on held-out photos when the config names some, else on
    catalog photos and simulated shopper photos of them."""
    held_out = _held_out(cfg, catalog=catalog)
    simulated = None
    if held_out is None and cfg.evaluation.simulated_queries and cfg.search.probes == "auto":
        simulated = simulated_queries_task(
            catalog=catalog, ids=vectors.ids, features=cfg.features, evaluation=cfg.evaluation
        )
    return evaluate_task(
        index=index,
        ids=vectors.ids,
        vectors=vectors.vectors,
        labels=catalog_labels(catalog, cfg.catalog.labels_csv),
        search=cfg.search,
        evaluation=cfg.evaluation,
        held_out=held_out,
        simulated=simulated,
    )


def bulk_into_run(
    cfg: Config,
    *,
    staging: RunLayout,
    index: SearchIndex,
    evaluation: Evaluation,
    catalog: pd.DataFrame,
    shared: SharedBulk | None = None,
) -> BulkSummary:
    """Every image's neighbours and the near-duplicate groups, written into the run (by tasks
    reading and writing the store, with `shared`)."""
    params = resolve_search_params(
        k=index.k, n=index.n, configured=cfg.bulk, calibrated=evaluation.probes
    )
    return bulk_stage(
        index_dir=staging.index.root,
        out=staging.bulk,
        params=params,
        bulk=cfg.bulk,
        csv=cfg.bulk.csv,
        catalog=catalog,
        hidden=read_hidden(cfg.workspace).ids,
        shared=shared,
    )


def share_staged_index(cfg: Config, staging: RunLayout, run_id: str) -> SharedBulk | None:
    """When bulk tasks go through the store (task_store): the staged run's index uploaded to
    the run's folder there (read by no one else before the run's manifest is published, which
    uploads it again), and the run's bulk folder there for the tasks' shards."""
    store = task_store(cfg)
    if store is None:
        return None
    final = WorkspaceLayout(cfg.workspace).run(run_id)
    index = StoreFolder.mirroring(store, cfg.workspace, final.index.root)
    return SharedBulk(
        StoreFiles.of(index, index.upload_files(staging.index.root)),
        StoreFolder.mirroring(store, cfg.workspace, final.bulk.root),
    )


def _record(
    cfg: Config,
    *,
    diag: Diagnostics,
    index: SearchIndex,
    evaluation: Evaluation,
    counts: Counts,
    timings: Timings,
    bulk: BulkSummary | None,
) -> RunRecord:
    """What the run records about itself: its config, backbone, k, calibration and figures,
    counts, timings, bulk summary and how the index holds its vectors."""
    return RunRecord(
        config=cfg.model_dump(mode="json"),
        backbone=BackboneSpec.from_config(cfg.features),
        fingerprint=index.fingerprint,
        suggested_k=diag.suggested_k,
        suggest_rule=diag.rule,
        sweep_note=diag.note,
        k=index.k,
        k_reason=k_reason(cfg.clustering, diag, index.k),
        calibration=Calibration(
            probes=evaluation.probes,
            recall_at_10=evaluation.recall_at_10,
            calibrated_on=evaluation.calibrated_on,
        ),
        metrics=Metrics(leave_one_out=evaluation.leave_one_out, held_out=evaluation.held_out),
        counts=counts,
        timings=timings,
        bulk=bulk,
        vectors=index.storage,
    )


@flow(name="train", flow_run_name=run_name("train"))
def train_flow(config_path: str, overrides: dict[str, Any] | None = None) -> TrainResult:
    """Train a versioned run from the configured catalog and point LATEST at it.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        overrides: Config fields to change for this run, as dotted keys, e.g.
            {"clustering.num_clusters": 12}.
    """
    cfg = load_config(config_path, overrides)
    lock = workspace_writer(cfg, "train flow")
    with lock, use_runner(cfg.runner):
        return train_stage(cfg)
