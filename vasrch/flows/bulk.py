"""The `bulk` flow: neighbours for every catalog image of a run, near-duplicates, report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, unmapped

from vasrch import progress
from vasrch.backbones import BackboneSpec, fingerprint
from vasrch.bulk import plan_cluster_chunks
from vasrch.config import BulkConfig, load_config
from vasrch.fileio import write_text_atomic
from vasrch.index import load_index
from vasrch.runner import use_runner
from vasrch.runs import read_manifest, resolve_run
from vasrch.tasks.bulk import bulk_chunk_task, duplicates_task, export_csv_task


def bulk_stage(index_dir: Path, out_dir: Path, bulk: BulkConfig, ids_order: list[str]) -> dict:
    """Map bulk tasks over cluster chunks into out_dir; then duplicates and the optional CSV."""
    index = load_index(index_dir)
    chunks = plan_cluster_chunks(index, bulk.chunk_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress.report("bulk", 0, index.n)
    paths = [str(out_dir / f"neighbours-{i:05d}.parquet") for i in range(len(chunks))]
    rows = bulk_chunk_task.map(
        unmapped(str(index_dir)), chunks, unmapped(bulk.top_n), unmapped(bulk.probes), paths
    ).result()
    groups = duplicates_task(str(out_dir), bulk.duplicate_threshold, ids_order)
    if bulk.csv:
        export_csv_task(str(out_dir))
    return {
        "neighbour_rows": int(sum(rows)),
        "duplicate_groups": int(groups["group_id"].nunique()),
        "duplicate_images": len(groups),
        "top_n": bulk.top_n,
        "probes": bulk.probes,
        "threshold": bulk.duplicate_threshold,
    }


@flow(name="bulk")
def bulk_flow(
    config_path: str,
    run: str | None = None,
    top_n: int | None = None,
    probes: int | None = None,
    csv: bool = False,
) -> dict[str, Any]:
    """Neighbours for a whole catalog with a complete run (LATEST by default), written to
    <workspace>/bulk/<run-id>/<job-time>/; the run folder itself is never changed."""
    cfg = load_config(config_path)
    bulk = cfg.bulk.model_copy(
        update={k: v for k, v in {"top_n": top_n, "probes": probes}.items() if v is not None}
        | ({"csv": True} if csv else {})
    )
    folder = resolve_run(cfg.workspace, run)
    manifest = read_manifest(folder, verify=True)
    if bulk.probes == "auto":
        bulk = bulk.model_copy(update={"probes": manifest.get("probes", 3)})
    expected = fingerprint(BackboneSpec.from_config(cfg.features))
    if manifest["fingerprint"] != expected:
        raise ValueError(
            f"run {folder.name} was built with backbone {manifest['fingerprint']}, but the config "
            f"asks for {expected}; train a run with this config first, or pass its own config"
        )
    job = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    out_dir = cfg.workspace / "bulk" / folder.name / job
    ids = pd.read_parquet(folder / "catalog.parquet", columns=["image_id"])["image_id"].tolist()
    with use_runner(cfg.runner):
        result = bulk_stage(folder / "index", out_dir, bulk, ids)
    write_text_atomic(out_dir / "COMPLETE", f"run {folder.name}\n")
    return {"run_id": folder.name, "out_dir": str(out_dir), **result}
