"""Versioned run folders: staging, manifest with artifact hashes, atomic LATEST, pruning."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from vasrch.catalog import sha256_file
from vasrch.fileio import write_text_atomic

MANIFEST = "manifest.json"
LATEST = "LATEST"
STAGING_PREFIX = ".staging-"
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
    return Path(workspace) / "runs"


def new_run_id(now: dt.datetime | None = None) -> str:
    """UTC time to the millisecond plus a short random hash: sorts by time, never collides."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:6]}"


def start_run(workspace: Path, run_id: str) -> Path:
    """A fresh staging folder; it becomes runs/<run_id> only in `complete_run`."""
    staging = runs_dir(workspace) / f"{STAGING_PREFIX}{run_id}"
    staging.mkdir(parents=True)
    return staging


def package_versions() -> dict[str, str]:
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
        if p.is_file() and p.name != MANIFEST
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
    write_text_atomic(staging / MANIFEST, json.dumps(full, indent=2, default=str))
    final = staging.parent / run_id
    os.rename(staging, final)
    return final


def set_latest(workspace: Path, run_id: str) -> None:
    write_text_atomic(runs_dir(workspace) / LATEST, run_id + "\n")


def latest_run_id(workspace: Path) -> str | None:
    p = runs_dir(workspace) / LATEST
    return p.read_text().strip() if p.is_file() else None


def resolve_run(workspace: Path, run: str | None = None) -> Path:
    """The folder of `run` (an id or a path), or of LATEST when None."""
    if run and Path(run).is_dir() and (Path(run) / MANIFEST).is_file():
        return Path(run)
    run_id = run or latest_run_id(workspace)
    if run_id is None:
        raise RunError(
            f"no complete run in {runs_dir(workspace)}: train one first with `vasrch run CONFIG`"
        )
    folder = runs_dir(workspace) / run_id
    if not (folder / MANIFEST).is_file():
        raise RunError(f"run {run_id!r} not found or incomplete in {runs_dir(workspace)}")
    return folder


def read_manifest(run_folder: Path, verify: bool = True) -> dict[str, Any]:
    """The run's manifest; with `verify`, every artifact's sha256 is checked."""
    manifest = json.loads((run_folder / MANIFEST).read_text())
    if verify:
        for rel, expected in manifest["artifacts"].items():
            p = run_folder / rel
            if not p.is_file():
                raise RunError(f"run {run_folder.name}: artifact {rel} is missing")
            if sha256_file(p) != expected:
                raise RunError(
                    f"run {run_folder.name}: artifact {rel} does not match its sha256 in "
                    f"{MANIFEST} (changed after the run completed); retrain or restore it"
                )
    return manifest


def list_runs(workspace: Path) -> list[dict[str, Any]]:
    """Complete runs, oldest first, with their id, status, k and headline metrics."""
    latest = latest_run_id(workspace)
    out = []
    folder = runs_dir(workspace)
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.is_dir() and (p / MANIFEST).is_file():
            m = read_manifest(p, verify=False)
            out.append(
                {
                    "run_id": p.name,
                    "latest": p.name == latest,
                    "status": m.get("status", "complete"),
                    "k": m.get("k"),
                    "images": m.get("counts", {}).get("indexed"),
                    "recall@10": m.get("metrics", {}).get("recall_at_10"),
                    "precision@10": m.get("metrics", {}).get("precision_at_10"),
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
