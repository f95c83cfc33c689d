"""The `refresh` flow: bring the served run up to date with the catalog without retraining.

It scans the catalog as nightly does, embeds only photos whose bytes are new, puts them on the
served run's trained clusters, drops removed photos, applies changed metadata and product
membership, and publishes the result as a new run (its manifest names its parent and what
changed) through the same staging, hashing, lock and LATEST rules as every run. An unchanged
catalog publishes nothing.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow
from prefect.logging import get_run_logger

from vasrch.catalog.changes import CatalogChanges, catalog_changes
from vasrch.catalog.products import Products
from vasrch.catalog.scan import diff_catalog, scan_catalog
from vasrch.config import Config, load_config
from vasrch.errors import RunIntegrityError
from vasrch.features.extraction import ExtractSummary, embedded_ids
from vasrch.index.compression import VectorStorage, streamed
from vasrch.index.figures import Drift
from vasrch.index.search_index import SearchIndex, load_index
from vasrch.index.training import load_diagnostics
from vasrch.layout import RunLayout
from vasrch.orchestration.flows.extract import extract_stage, fetching, scan_options
from vasrch.orchestration.flows.train import (
    bulk_into_run,
    config_cache_dir,
    config_fingerprint,
    share_staged_index,
    stage_inputs,
)
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import use_runner
from vasrch.orchestration.tasks.refresh import (
    drift_task,
    publish_refresh_artifact,
    refresh_index_task,
    refresh_markdown,
)
from vasrch.orchestration.tasks.train import (
    load_vectors_task,
    publish_run_task,
    report_task,
)
from vasrch.orchestration.timing import timed
from vasrch.workspace import runs
from vasrch.workspace.hidden import settle
from vasrch.workspace.mirror import store_of, workspace_writer
from vasrch.workspace.run_manifest import (
    BulkSummary,
    Counts,
    Refresh,
    RunManifest,
    RunRecord,
    Timings,
)

RACE_CHECKS = 3  # rebuilds for photos removed while a refresh ran, before it publishes anyway


@dataclass(frozen=True)
class RefreshResult:
    """A refresh: the run it started from, what changed, and the run it published (None when
    the catalog was unchanged)."""

    parent_run: str
    changes: CatalogChanges
    extract: ExtractSummary
    seconds: float
    run_dir: Path | None = None
    manifest: RunManifest | None = None

    @property
    def published(self) -> bool:
        """Whether a new run was published (the catalog had changed)."""
        return self.manifest is not None


@dataclass(frozen=True)
class _Parent:
    """The served run a refresh starts from: its folder, verified manifest, the config it was
    trained with, its catalog table and the ids its index holds."""

    layout: RunLayout
    manifest: RunManifest
    config: Config
    catalog: pd.DataFrame
    indexed: list[str]


def _parent(cfg: Config) -> _Parent:
    """LATEST, verified, built with the config's backbone; an error when there is none."""
    latest = runs.latest_run_id(cfg.workspace)
    if latest is None:
        raise RunIntegrityError(
            f"no run to refresh in {cfg.workspace}: train one first (vasrch train CONFIG)"
        )
    layout = RunLayout(runs.resolve_run(cfg.workspace, latest))
    manifest = runs.read_manifest(layout.root, verify=True)
    runs.require_backbone(manifest, config_fingerprint(cfg))
    return _Parent(
        layout=layout,
        manifest=manifest,
        config=Config.model_validate(manifest.config),
        catalog=pd.read_parquet(layout.catalog),
        indexed=list(load_index(layout.index.root).ids),
    )


def refresh_stage(cfg: Config) -> RefreshResult:
    """Scan and extract what is new, then publish the catalog on LATEST's clusters as a new run
    (nothing when the catalog is what LATEST indexes). Run under the workspace lock."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    parent = _parent(cfg)
    with timed("extract_s", timings):
        catalog, extract = extract_stage(cfg, previous=parent.catalog)
    embedded = embedded_ids(config_cache_dir(cfg), catalog)
    changes = catalog_changes(parent.catalog, parent.indexed, catalog, list(embedded))
    forgotten = settle(cfg.workspace, catalog["product_id"].astype(str), store_of(cfg))
    log = get_run_logger()
    if forgotten:
        log.info("no longer hidden, as the catalog dropped them: %s", ", ".join(forgotten))
    if changes.empty:
        log.info("catalog unchanged since run %s: nothing to publish", parent.layout.run_id)
        publish_refresh_artifact(
            refresh_markdown(
                run_id=None, parent_run=parent.layout.run_id, changes=changes, drift=None
            )
        )
        return RefreshResult(parent.layout.run_id, changes, extract, time.perf_counter() - start)
    log.info("catalog changes since run %s: %s", parent.layout.run_id, changes.counts())
    run_id = runs.new_run_id()
    staging = RunLayout(runs.start_run(cfg.workspace, run_id))
    try:
        _copy_training(parent.layout, staging)
        built = _build(cfg, parent=parent, staging=staging, catalog=catalog, changes=changes)
        index, catalog = built.index, built.catalog
        bulk = None
        if parent.config.bulk.enabled:
            with timed("bulk_s", timings):
                bulk = bulk_into_run(
                    parent.config,
                    staging=staging,
                    index=index,
                    evaluation=parent.manifest.evaluation,
                    catalog=catalog,
                    shared=share_staged_index(cfg, staging, run_id),
                )
        report_task(
            run_dir=str(staging.root),
            catalog=catalog,
            diag=load_diagnostics(staging.diagnostics, parent.manifest.sweep_note),
            k=index.k,
            evaluation=parent.manifest.evaluation,
            fetching=fetching(parent.config),
            title=f"vasrch run {run_id} (refresh of {parent.layout.run_id})",
        )
        table = diff_catalog(parent.catalog, catalog)
        stage_inputs(staging, cfg=parent.config, table=table, extract=extract)
        record = _record(
            parent.manifest,
            counts=Counts.of(table, indexed=index.n, extract=extract),
            timings=Timings(
                diagnostics_s=0.0, train_s=built.train_s, evaluate_s=built.evaluate_s, **timings
            ),
            bulk=bulk,
            refresh=_refresh(parent, changes=changes, drift=built.drift),
            vectors=index.storage,
        )
        manifest = publish_run_task(
            staging=str(staging.root),
            workspace=str(cfg.workspace),
            record=record,
            parent_run=parent.layout.run_id,
        )
    except BaseException:
        shutil.rmtree(staging.root, ignore_errors=True)
        raise
    publish_refresh_artifact(
        refresh_markdown(
            run_id=run_id, parent_run=parent.layout.run_id, changes=changes, drift=built.drift
        )
    )
    run_dir = runs.runs_dir(cfg.workspace) / run_id
    return RefreshResult(
        parent.layout.run_id,
        changes,
        extract,
        time.perf_counter() - start,
        run_dir=run_dir,
        manifest=manifest,
    )


@dataclass(frozen=True)
class _Built:
    """The refreshed index, the catalog it holds, its drift, and the seconds spent building
    (train_s) and checking (evaluate_s) it."""

    index: SearchIndex
    catalog: pd.DataFrame
    drift: Drift
    train_s: float
    evaluate_s: float


def _copy_training(parent: RunLayout, staging: RunLayout) -> None:
    """What a refresh keeps of its parent's training: the KMeans model and the k sweep."""
    shutil.copy2(parent.model, staging.model)
    shutil.copytree(parent.diagnostics.root, staging.diagnostics.root)


def _build(
    cfg: Config,
    *,
    parent: _Parent,
    staging: RunLayout,
    catalog: pd.DataFrame,
    changes: CatalogChanges,
) -> _Built:
    """The refreshed index and its drift. A catalog whose budget may compress it is refreshed
    streamed, as it trained: its vectors and prints loaded into files in the staging run's
    scratch folder (removed once the index is saved and its drift measured). Removal wins
    races: the catalog is scanned again once the index is built, and photos removed meanwhile
    are dropped and the index rebuilt from the cache (up to RACE_CHECKS times; what is removed
    later still leaves with the next refresh)."""
    scratch = None
    if streamed(len(catalog), parent.config.search.max_bytes_per_photo):
        scratch = staging.root / "scratch"
    for attempt in range(1, RACE_CHECKS + 1):
        timings: dict[str, float] = {}
        folder = None if scratch is None else scratch / f"attempt-{attempt}"
        with timed("train_s", timings):
            vectors = load_vectors_task(
                cache_dir=config_cache_dir(cfg),
                catalog=catalog,
                spill=None if folder is None else str(folder / "vectors.npy"),
            )
            index = refresh_index_task(
                parent_index_dir=str(parent.layout.index.root),
                vectors=vectors,
                search=parent.config.search,
                products=Products.from_catalog(catalog),
                run_dir=str(staging.root),
                scratch=None if folder is None else str(folder),
            )
        with timed("evaluate_s", timings):
            drift = drift_task(
                index=index,
                vectors=vectors,
                parent=parent.manifest,
                parent_index_dir=str(parent.layout.index.root),
                added=len(changes.added) + len(changes.replaced),
                evaluation=parent.config.evaluation,
                target_recall=parent.config.search.target_recall,
                limits=cfg.refresh,
            )
        now = scan_catalog(cfg.catalog.path, catalog, scan_options(cfg)).table
        removed = set(vectors.ids) - set(now["image_id"])
        if not removed or attempt == RACE_CHECKS:
            break
        get_run_logger().info("%d photos removed while refreshing: dropped", len(removed))
        catalog = catalog[~catalog["image_id"].isin(removed)].reset_index(drop=True)
    if scratch is not None:
        shutil.rmtree(scratch)
    return _Built(index, catalog, drift, timings["train_s"], timings["evaluate_s"])


def _refresh(parent: _Parent, *, changes: CatalogChanges, drift: Drift) -> Refresh:
    """The refresh's record: the run whose clusters it kept, its changes and drift."""
    before = parent.manifest.refresh
    return Refresh(
        trained_run=before.trained_run if before else parent.layout.run_id,
        **changes.counts(),
        drift=drift,
    )


def _record(
    parent: RunManifest,
    *,
    counts: Counts,
    timings: Timings,
    bulk: BulkSummary | None,
    refresh: Refresh,
    vectors: VectorStorage | None,
) -> RunRecord:
    """The parent's record (config, backbone, k, calibration, figures) with this refresh's
    counts, timings, bulk summary, refresh record and how its index holds its vectors."""
    kept = {name: getattr(parent, name) for name in RunRecord.model_fields}
    return RunRecord(
        **kept
        | {
            "status": "complete",
            "reason": None,
            "counts": counts,
            "timings": timings,
            "bulk": bulk,
            "refresh": refresh,
            "vectors": vectors,
        }
    )


@flow(name="refresh", flow_run_name=run_name("refresh"))
def refresh_flow(config_path: str, overrides: dict[str, Any] | None = None) -> RefreshResult:
    """Bring the served run up to date with the catalog without retraining: new photos join
    the trained clusters, removed ones leave, changed titles, prices and other columns apply;
    published as a new run only when something changed.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        overrides: Config fields to change for this run, as dotted keys, e.g.
            {"refresh.max_added_share": 0.3}.
    """
    cfg = load_config(config_path, overrides)
    lock = workspace_writer(cfg, "refresh flow")
    with lock, use_runner(cfg.runner):
        return refresh_stage(cfg)
