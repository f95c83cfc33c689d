"""Versioned run folders: staging, manifest with artifact hashes, atomic LATEST, pruning."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from vasrch.catalog import STATUSES
from vasrch.fileio import finish_staging, start_staging, write_text_atomic
from vasrch.hashing import sha256_file
from vasrch.layout import STAGING_PREFIX, RunLayout, WorkspaceLayout

PACKAGES = (
    "vasrch",
    "numpy",
    "scikit-learn",
    "tensorflow",
    "keras",
    "prefect",
    "pandas",
    "pyarrow",
)


class RunError(RuntimeError):
    """A run that is missing, incomplete or tampered with."""


def runs_dir(workspace: Path) -> Path:
    """The folder holding a workspace's runs and its LATEST pointer."""
    return WorkspaceLayout(Path(workspace)).runs


def new_run_id(now: dt.datetime | None = None) -> str:
    """UTC time to the millisecond plus a short random hash: sorts by time, never collides."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:6]}"


def start_run(workspace: Path, run_id: str) -> Path:
    """A fresh staging folder; it becomes runs/<run_id> only in `complete_run`."""
    return start_staging(WorkspaceLayout(Path(workspace)).run(run_id).root)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's results."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _artifact_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != RunLayout(folder).manifest
    }


def complete_run(staging: Path, manifest: dict[str, Any]) -> Path:
    """Hash every artifact, write manifest.json, and rename the folder to its final name."""
    run_id = staging.name.removeprefix(STAGING_PREFIX)
    full = {
        "run_id": run_id,
        "completed": dt.datetime.now(dt.timezone.utc).isoformat(),
        "versions": package_versions(),
        **manifest,
        "artifacts": _artifact_hashes(staging),
    }
    write_text_atomic(RunLayout(staging).manifest, json.dumps(full, indent=2, default=str))
    return finish_staging(staging, staging.parent / run_id)


def set_latest(workspace: Path, run_id: str) -> None:
    """Point runs/LATEST at `run_id`, atomically."""
    write_text_atomic(WorkspaceLayout(Path(workspace)).latest, run_id + "\n")


def latest_run_id(workspace: Path) -> str | None:
    """The run runs/LATEST names, or None before the first promoted run."""
    p = WorkspaceLayout(Path(workspace)).latest
    return p.read_text().strip() if p.is_file() else None


def resolve_run(workspace: Path, run: str | None = None) -> Path:
    """The folder of `run` (an id or a path), or of LATEST when None."""
    if run and Path(run).is_dir() and RunLayout(Path(run)).manifest.is_file():
        return Path(run)
    run_id = run or latest_run_id(workspace)
    if run_id is None:
        raise RunError(
            f"no complete run in {runs_dir(workspace)}: train one first with `vasrch run CONFIG`"
        )
    folder = runs_dir(workspace) / run_id
    if not RunLayout(folder).manifest.is_file():
        raise RunError(f"run {run_id!r} not found or incomplete in {runs_dir(workspace)}")
    return folder


def read_manifest(run_folder: Path, verify: bool = True) -> dict[str, Any]:
    """The run's manifest; with `verify`, every artifact's sha256 is checked."""
    path = RunLayout(run_folder).manifest
    manifest = json.loads(path.read_text())
    if verify:
        for rel, expected in manifest["artifacts"].items():
            p = run_folder / rel
            if not p.is_file():
                raise RunError(f"run {run_folder.name}: artifact {rel} is missing")
            if sha256_file(p) != expected:
                raise RunError(
                    f"run {run_folder.name}: artifact {rel} does not match its sha256 in "
                    f"{path.name} (changed after the run completed); retrain or restore it"
                )
    return manifest


def headline_figures(metrics: dict[str, float]) -> dict[str, float | None]:
    """recall@10 and precision@10 for a table of runs: held-out figures when the run has them,
    else leave-one-out ones, labelled which."""
    kind = "held_out" if "held_out_recall_at_10" in metrics else "leave_one_out"
    return {
        "figures": kind.replace("_", "-"),
        "recall@10": metrics.get(f"{kind}_recall_at_10", metrics.get("recall_at_10")),
        "precision@10": metrics.get(f"{kind}_precision_at_10"),
    }


def list_runs(workspace: Path) -> list[dict[str, Any]]:
    """Complete runs, oldest first, with their id, status, k and headline metrics."""
    latest = latest_run_id(workspace)
    out = []
    folder = runs_dir(workspace)
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.is_dir() and RunLayout(p).manifest.is_file():
            m = read_manifest(p, verify=False)
            out.append(
                {
                    "run_id": p.name,
                    "latest": p.name == latest,
                    "status": m.get("status", "complete"),
                    "k": m.get("k"),
                    "images": m.get("counts", {}).get("indexed"),
                    **headline_figures(m.get("metrics", {})),
                }
            )
    return out


def prune_runs(workspace: Path, keep_last: int, stale_staging_s: float = 6 * 3600) -> list[str]:
    """Delete complete runs beyond the newest `keep_last`, never LATEST, and staging folders
    left by killed runs (untouched for `stale_staging_s`). Returns the removed names."""
    latest = latest_run_id(workspace)
    runs = [r["run_id"] for r in list_runs(workspace)]
    doomed = [r for r in runs[: max(0, len(runs) - keep_last)] if r != latest]
    folder = runs_dir(workspace)
    cutoff = time.time() - stale_staging_s
    doomed += [
        p.name
        for p in folder.glob(f"{STAGING_PREFIX}*")
        if p.is_dir() and p.stat().st_mtime < cutoff
    ]
    for name in doomed:
        shutil.rmtree(folder / name)
    return doomed


def require_backbone(manifest: dict[str, Any], expected_fingerprint: str) -> None:
    """Refuse a run built with another backbone than the one a config asks for."""
    if manifest["fingerprint"] != expected_fingerprint:
        raise RunError(
            f"run {manifest['run_id']} was built with backbone {manifest['fingerprint']}, but "
            f"the config asks for {expected_fingerprint}; train a run with this config first, "
            "or pass its own config"
        )


def previous_catalog(workspace: Path) -> pd.DataFrame | None:
    """The catalog table of the LATEST run, if any (for incremental scans and diffs)."""
    latest = latest_run_id(workspace)
    if latest is None:
        return None
    path = WorkspaceLayout(Path(workspace)).run(latest).catalog
    return pd.read_parquet(path) if path.is_file() else None


def run_counts(
    table: pd.DataFrame, indexed: int, seen: int, rejected: int, new: int, reused: int
) -> dict:
    """The manifest's counts: catalog size (`seen`: every image file found, scanned or not),
    indexed, rejected, extracted and reused images, and how many scanned images are new,
    changed, unchanged or gone since the last run (`table` is the catalog diffed against the
    previous run's)."""
    return {
        "catalog": seen,
        "indexed": indexed,
        "rejected": rejected,
        "extracted_new": new,
        "reused": reused,
        **{status: int((table["status"] == status).sum()) for status in STATUSES},
    }


def run_manifest(
    *,
    config: dict[str, Any],
    backbone: dict[str, Any],
    fingerprint: str,
    suggested_k: int,
    suggest_rule: str,
    k: int,
    metrics: dict[str, float],
    calibrated_on: str,
    counts: dict[str, int],
    timings: dict[str, float],
    bulk: dict[str, Any] | None,
    sweep_note: str | None = None,
) -> dict[str, Any]:
    """What a run records about itself before its artifacts are hashed: the resolved config,
    the backbone, the k chosen (and a note when it sits at the edge of the sweep), the
    calibrated probes and what they were calibrated on, counts, timings, metrics and bulk."""
    return {
        "status": "complete",
        "config": config,
        "backbone": backbone,
        "fingerprint": fingerprint,
        "suggested_k": suggested_k,
        "suggest_rule": suggest_rule,
        "sweep_note": sweep_note,
        "k": k,
        "probes": int(metrics["probes"]),
        "calibrated_on": calibrated_on,
        "counts": counts,
        "timings": {name: round(seconds, 3) for name, seconds in timings.items()},
        "metrics": metrics,
        "bulk": bulk,
    }


def reject_run(manifest: dict[str, Any], reason: str) -> dict[str, Any]:
    """The manifest of a run recorded but not promoted, with the reason."""
    return {**manifest, "status": "rejected", "reason": reason}
