"""The `bulk` flow: neighbours for every catalog image of a run, near-duplicates, report."""

from __future__ import annotations

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
from vasrch.config import BulkConfig, load_config
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.index.search_index import load_index
from vasrch.layout import BulkLayout, RunLayout, WorkspaceLayout
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import use_runner
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
from vasrch.workspace.run_manifest import BulkSummary
from vasrch.workspace.runs import new_run_id, read_manifest, require_backbone, resolve_run


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
) -> BulkSummary:
    """Map bulk tasks over cluster chunks of `bulk.chunk_rows` into `out` (each neighbour pair
    with its duplicate score for the first `bulk.duplicate_candidates`); then the product
    neighbours (when products have several photos), the near-duplicate groups at
    `bulk.duplicate_threshold` (representatives preferred in catalog order) and the CSV;
    `hidden` products are nobody's neighbour."""
    index = load_index(index_dir)
    chunks = plan_cluster_chunks(index, bulk.chunk_rows)
    out.root.mkdir(parents=True, exist_ok=True)
    progress.report("bulk", 0, index.n)
    rows = bulk_chunk_task.map(
        index_dir=unmapped(str(index_dir)),
        clusters=chunks,
        top_n=unmapped(params.top_n),
        probes=unmapped(params.probes),
        out_path=[str(out.neighbours(i)) for i in range(len(chunks))],
        candidates=unmapped(bulk.duplicate_candidates),
        hidden=unmapped(hidden),
    ).result()
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
        )
    write_text_atomic(out.complete, f"run {folder.name}\n")
    publish_outputs(out, folder.name)
    return BulkJob(run_id=folder.name, out_dir=out.root, summary=summary)


def publish_outputs(out: BulkLayout, run_id: str) -> None:
    """A markdown artifact naming the bulk job's folder and files, with links that open."""
    files = [*out.neighbour_shards(), out.products, out.duplicates, out.csv]
    lines = [f"Bulk neighbours of run `{run_id}` in `{out.root}`:", ""]
    lines += [f"- [{p.name}]({link_to(p)})" for p in files if p.is_file()]
    create_markdown_artifact(
        key="bulk-outputs", markdown="\n".join(lines), description="Where the bulk job wrote"
    )
