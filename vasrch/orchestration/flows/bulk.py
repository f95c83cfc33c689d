"""The `bulk` flow: neighbours for every catalog image of a run, near-duplicates, report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
from prefect import flow, unmapped
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from vasrch import progress
from vasrch.atomic_files import write_text_atomic
from vasrch.bulk.neighbours import plan_cluster_chunks
from vasrch.config import BulkConfig, Config, load_config
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.index.search_index import load_index
from vasrch.layout import BulkLayout, RunLayout, WorkspaceLayout
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import task_slots, task_store, use_runner
from vasrch.orchestration.tasks.bulk import (
    bulk_chunk_task,
    duplicates_task,
    export_csv_task,
    product_neighbours_task,
)
from vasrch.pages.file_server import link_to
from vasrch.search.parameters import SearchParams, resolve_search_params
from vasrch.workspace.hidden import read_hidden
from vasrch.workspace.lock import workspace_lock
from vasrch.workspace.mirror import publish_bulk_job, store_of
from vasrch.workspace.remote_runs import fetch_run, follow_latest
from vasrch.workspace.run_manifest import BulkSummary
from vasrch.workspace.runs import new_run_id, read_manifest, require_backbone, resolve_run
from vasrch.workspace.store_folders import StoreFiles, StoreFolder


@dataclass(frozen=True)
class SharedBulk:
    """Where bulk tasks on machines that share no disk with the flow read the index and write
    their neighbour shards: folders of the workspace's store (task_store)."""

    index: StoreFiles
    out: StoreFolder


@dataclass(frozen=True)
class BulkJob:
    """A bulk job on a saved run: the run, the job's folder and what it wrote."""

    run_id: str
    out_dir: Path
    summary: BulkSummary


def bulk_stage(
    *,
    index_dir: Path,
    out: BulkLayout,
    params: SearchParams,
    bulk: BulkConfig,
    csv: bool,
    catalog: pd.DataFrame,
    hidden: frozenset[str],
    shared: SharedBulk | None = None,
) -> BulkSummary:
    """Map bulk tasks over even cluster chunks of at most `bulk.chunk_rows`, as many as a
    multiple of the tasks the runner runs at once (task_slots), into `out` (each neighbour pair
    with its duplicate score for the first `bulk.duplicate_candidates`); then the product
    neighbours (when products have several photos), the near-duplicate groups at
    `bulk.duplicate_threshold` (representatives preferred in catalog order) and the CSV;
    `hidden` products are nobody's neighbour. With `shared`, the tasks read the index from the
    store and write their shards there, and the shards are then gathered into `out`."""
    index = load_index(index_dir)
    chunks = plan_cluster_chunks(index, bulk.chunk_rows, task_slots())
    out.root.mkdir(parents=True, exist_ok=True)
    progress.report("bulk", 0, index.n)
    rows = bulk_chunk_task.map(
        index_dir=unmapped(str(index_dir) if shared is None else shared.index),
        clusters=chunks,
        top_n=unmapped(params.top_n),
        probes=unmapped(params.probes),
        out=unmapped(str(out.root) if shared is None else shared.out),
        name=[out.neighbours(i).name for i in range(len(chunks))],
        candidates=unmapped(bulk.duplicate_candidates),
        hidden=unmapped(hidden),
    ).result()
    if shared is not None:
        shared.out.gather(out.root)
    if index.products is not None:
        product_neighbours_task(out_dir=str(out.root), top_n=params.top_n)
    groups = duplicates_task(
        out_dir=str(out.root), threshold=bulk.duplicate_threshold, catalog=catalog
    )
    if csv:
        export_csv_task(out_dir=str(out.root), raw=bulk.csv_raw)
    return BulkSummary(
        neighbour_rows=sum(rows),
        duplicate_groups=groups["group_id"].nunique(),
        duplicate_images=len(groups),
        top_n=params.top_n,
        probes=params.probes,
        threshold=bulk.duplicate_threshold,
    )


@flow(name="bulk", flow_run_name=run_name("bulk"))
def bulk_flow(
    config_path: str,
    run: str | None = None,
    top_n: Annotated[int, Field(ge=1)] | None = None,
    probes: Annotated[int, Field(ge=1)] | None = None,
    csv: bool = False,
) -> BulkJob:
    """Neighbours for a whole catalog with a complete run (LATEST by default), written to
    <workspace>/bulk/<run-id>/<job>/; the run folder itself is never changed.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        run: Run id to use; empty for LATEST.
        top_n: Neighbours per image; empty for the config's bulk.top_n.
        probes: Clusters searched per image; empty for the config's bulk.probes (auto: the
            probes calibrated when the run was trained).
        csv: Also write neighbours.csv beside the Parquet shards.
    """
    cfg = load_config(config_path)
    store = store_of(cfg)
    if store is not None and run is None:  # the run comes from the store, verified
        follow_latest(store, cfg.workspace)
    elif store is not None:
        fetch_run(store, run, cfg.workspace)
    folder = resolve_run(cfg.workspace, run)
    manifest = read_manifest(folder, verify=True)
    require_backbone(manifest, fingerprint(BackboneSpec.from_config(cfg.features)))
    params = resolve_search_params(
        k=manifest.k,
        n=manifest.counts.indexed,
        top_n=top_n,
        probes=probes,
        configured=cfg.bulk,
        calibrated=manifest.calibration.probes,
    )
    run_files = RunLayout(folder)
    out = WorkspaceLayout(cfg.workspace).bulk_job(folder.name, new_run_id())
    catalog = pd.read_parquet(run_files.catalog)
    lock = workspace_lock(cfg.workspace, "bulk flow", cfg.runs.lock_timeout_s)
    with lock, use_runner(cfg.runner):
        summary = bulk_stage(
            index_dir=run_files.index.root,
            out=out,
            params=params,
            bulk=cfg.bulk,
            csv=csv or cfg.bulk.csv,
            catalog=catalog,
            hidden=read_hidden(cfg.workspace).ids,
            shared=_shared_run_index(cfg, run_files, manifest.artifacts, out),
        )
    write_text_atomic(out.complete, f"run {folder.name}\n")
    if store is not None:
        publish_bulk_job(store, cfg.workspace, out)
    publish_outputs(out, folder.name)
    return BulkJob(run_id=folder.name, out_dir=out.root, summary=summary)


def _shared_run_index(
    cfg: Config, run_files: RunLayout, artifacts: Mapping[str, str], out: BulkLayout
) -> SharedBulk | None:
    """A published run's index on the store (its files' sha256s from the verified manifest)
    and the job's folder there, when bulk tasks go through the store (task_store)."""
    store = task_store(cfg)
    if store is None:
        return None
    index = StoreFolder.mirroring(store, cfg.workspace, run_files.index.root)
    under = run_files.index.root.relative_to(run_files.root).as_posix() + "/"
    files = {n.removeprefix(under): d for n, d in artifacts.items() if n.startswith(under)}
    return SharedBulk(
        StoreFiles.of(index, files), StoreFolder.mirroring(store, cfg.workspace, out.root)
    )


def publish_outputs(out: BulkLayout, run_id: str) -> None:
    """A markdown artifact naming the bulk job's folder and files, with links that open."""
    files = [*out.neighbour_shards(), out.products, out.duplicates, out.csv]
    lines = [f"Bulk neighbours of run `{run_id}` in `{out.root}`:", ""]
    lines += [f"- [{p.name}]({link_to(p)})" for p in files if p.is_file()]
    create_markdown_artifact(
        key="bulk-outputs", markdown="\n".join(lines), description="Where the bulk job wrote"
    )
