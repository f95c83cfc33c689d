"""The `bulk` flow: neighbours for every catalog image of a run, near-duplicates, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from prefect import flow, unmapped
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from vasrch import progress
from vasrch.atomic_files import write_text_atomic
from vasrch.bulk.neighbours import plan_cluster_chunks
from vasrch.config import load_config
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
from vasrch.workspace.lock import workspace_lock
from vasrch.workspace.runs import new_run_id, read_manifest, require_backbone, resolve_run


def bulk_stage(
    index_dir: Path,
    out: BulkLayout,
    params: SearchParams,
    duplicate_threshold: float,
    duplicate_candidates: int,
    chunk_rows: int,
    csv: bool,
    catalog: pd.DataFrame,
) -> dict[str, Any]:
    """Map bulk tasks over cluster chunks into `out` (each neighbour pair with its duplicate
    score); then the product neighbours (when products have several photos), the near-duplicate
    groups (representatives preferred in catalog order) and the CSV."""
    index = load_index(index_dir)
    chunks = plan_cluster_chunks(index, chunk_rows)
    out.root.mkdir(parents=True, exist_ok=True)
    progress.report("bulk", 0, index.n)
    paths = [str(out.neighbours(i)) for i in range(len(chunks))]
    rows = bulk_chunk_task.map(
        unmapped(str(index_dir)),
        chunks,
        unmapped(params.top_n),
        unmapped(params.probes),
        paths,
        unmapped(duplicate_candidates),
    ).result()
    if index.products is not None:
        product_neighbours_task(str(out.root), params.top_n)
    groups = duplicates_task(str(out.root), duplicate_threshold, catalog)
    if csv:
        export_csv_task(str(out.root))
    return {
        "neighbour_rows": int(sum(rows)),
        "duplicate_groups": int(groups["group_id"].nunique()),
        "duplicate_images": len(groups),
        "top_n": params.top_n,
        "probes": params.probes,
        "threshold": duplicate_threshold,
    }


@flow(name="bulk", flow_run_name=run_name("bulk"))
def bulk_flow(
    config_path: str,
    run: str | None = None,
    top_n: Annotated[int, Field(ge=1)] | None = None,
    probes: Annotated[int, Field(ge=1)] | None = None,
    csv: bool = False,
) -> dict[str, Any]:
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
    fp = fingerprint(BackboneSpec.from_config(cfg.features))
    require_backbone(manifest, fp)
    params = resolve_search_params(
        k=manifest["k"],
        n=manifest["counts"]["indexed"],
        top_n=top_n,
        probes=probes,
        configured=cfg.bulk,
        calibrated=manifest.get("probes"),
    )
    run_files = RunLayout(folder)
    out = WorkspaceLayout(cfg.workspace).bulk_job(folder.name, new_run_id())
    catalog = pd.read_parquet(run_files.catalog)
    lock = workspace_lock(cfg.workspace, "bulk flow", cfg.runs.lock_timeout_s)
    with lock, use_runner(cfg.runner):
        result = bulk_stage(
            run_files.index.root,
            out,
            params,
            cfg.bulk.duplicate_threshold,
            cfg.bulk.duplicate_candidates,
            cfg.bulk.chunk_rows,
            csv or cfg.bulk.csv,
            catalog,
        )
    write_text_atomic(out.complete, f"run {folder.name}\n")
    publish_outputs(out, folder.name)
    return {"run_id": folder.name, "out_dir": str(out.root), **result}


def publish_outputs(out: BulkLayout, run_id: str) -> None:
    """A markdown artifact naming the bulk job's folder and files, with links that open."""
    files = [*out.neighbour_shards(), out.products, out.duplicates, out.csv]
    lines = [f"Bulk neighbours of run `{run_id}` in `{out.root}`:", ""]
    lines += [f"- [{p.name}]({link_to(p)})" for p in files if p.is_file()]
    create_markdown_artifact(
        key="bulk-outputs", markdown="\n".join(lines), description="Where the bulk job wrote"
    )
