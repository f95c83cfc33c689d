"""Versioned run folders: staging, manifest with artifact hashes, atomic LATEST, pruning."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from vasrch.atomic_files import finish_staging, start_staging, write_text_atomic
from vasrch.errors import RunIntegrityError
from vasrch.hashing import IntegrityError, check_hashes, folder_hashes, read_verified
from vasrch.layout import STAGING_PREFIX, RunLayout, WorkspaceLayout
from vasrch.workspace.run_manifest import Lineage, Metrics, RunManifest, RunRecord

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


RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]*")


class RunError(RunIntegrityError):
    """A run that is missing, incomplete, damaged or tampered with."""


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


def complete_run(staging: Path, record: RunRecord, *, parent_run: str | None) -> Path:
    """Hash every artifact, write manifest.json (the record, the run's id and lineage, the
    hashes), and rename the folder to its final name."""
    run_id = staging.name.removeprefix(STAGING_PREFIX)
    artifacts = folder_hashes(staging, skip=[RunLayout(staging).manifest])
    if not artifacts:
        raise RunError(f"{staging} holds no artifacts: nothing to complete")
    manifest = RunManifest(
        **dict(record),
        run_id=run_id,
        lineage=Lineage(
            parent_run=parent_run,
            created=dt.datetime.now(dt.timezone.utc),
            versions=package_versions(),
        ),
        artifacts=artifacts,
    )
    write_text_atomic(RunLayout(staging).manifest, manifest.model_dump_json(indent=2))
    return finish_staging(staging, staging.parent / run_id)


def set_latest(workspace: Path, run_id: str) -> None:
    """Point runs/LATEST at `run_id`, atomically."""
    write_text_atomic(WorkspaceLayout(Path(workspace)).latest, run_id + "\n")


def latest_run_id(workspace: Path) -> str | None:
    """The run runs/LATEST names, or None before the first promoted run. LATEST must name a
    run folder of this workspace by its id: anything else (a path, ../other) is refused."""
    p = WorkspaceLayout(Path(workspace)).latest
    if not p.is_file():
        return None
    name = p.read_text(encoding="utf-8").strip()
    if not RUN_ID.fullmatch(name):
        raise RunError(
            f"{p} names {name[:80]!r}, which is not a run id of this workspace; point it at a "
            "run with `vasrch runs promote RUN`"
        )
    return name


def promote(workspace: Path, run_id: str) -> Path:
    """Point LATEST at a complete run of this workspace after verifying its artifacts (to roll
    back or forward); returns the run's folder."""
    if not RUN_ID.fullmatch(run_id):
        raise RunError(f"{run_id[:80]!r} is not a run id (see `vasrch runs list`)")
    folder = resolve_run(workspace, run_id)
    read_manifest(folder, verify=True)
    set_latest(workspace, run_id)
    return folder


def resolve_run(workspace: Path, run: str | None = None) -> Path:
    """The folder of `run` (an id or a path), or of LATEST when None."""
    if run and Path(run).is_dir() and RunLayout(Path(run)).manifest.is_file():
        return Path(run)
    run_id = run or latest_run_id(workspace)
    if run_id is None:
        raise RunError(
            f"no complete run in {runs_dir(workspace)}: train one first with `vasrch train CONFIG`"
        )
    folder = runs_dir(workspace) / run_id
    if not RunLayout(folder).manifest.is_file():
        raise RunError(f"run {run_id!r} not found or incomplete in {runs_dir(workspace)}")
    return folder


def _damaged(path: Path, what: str) -> RunError:
    return RunError(f"{path}: damaged ({what}); restore it or delete the run folder")


def read_manifest(run_folder: Path, verify: bool = True) -> RunManifest:
    """The run's manifest, which must list the run's artifacts and be a whole manifest (today's
    or an older layout); with `verify`, every artifact's sha256 is checked. RunError names the
    file when it is damaged."""
    path = RunLayout(run_folder).manifest
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing: the run is incomplete or damaged") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _damaged(path, f"cannot be read: {err}") from None
    except json.JSONDecodeError as err:
        raise _damaged(path, f"not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise _damaged(path, "not a JSON object")
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        raise _damaged(path, "it lists no artifacts")
    if not all(isinstance(v, str) for v in artifacts.values()):
        raise _damaged(path, "an artifact has no sha256")
    try:
        manifest = RunManifest.model_validate(manifest)
    except ValidationError as err:
        raise _damaged(path, f"not a run manifest: {_first_problem(err)}") from None
    if verify:
        verify_artifacts(run_folder, manifest)
    return manifest


def _first_problem(err: ValidationError) -> str:
    """The first field a manifest got wrong, and how many problems it has."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the manifest"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _tampered(run_folder: Path, err: IntegrityError) -> RunError:
    return RunError(
        f"run {run_folder.name}: {err} in {RunLayout(run_folder).manifest.name} (changed after "
        "the run completed); retrain or restore it"
    )


def verify_artifacts(
    run_folder: Path, manifest: RunManifest, names: list[str] | None = None
) -> None:
    """Check the sha256 of the artifacts `names` lists (default: all) against the manifest."""
    try:
        check_hashes(run_folder, manifest.artifacts, names)
    except IntegrityError as err:
        raise _tampered(run_folder, err) from None


def read_artifact(run_folder: Path, manifest: RunManifest, path: Path) -> bytes:
    """The bytes of one artifact of a run, read once and checked against the manifest."""
    try:
        return read_verified(
            run_folder, manifest.artifacts, path.relative_to(run_folder).as_posix()
        )
    except IntegrityError as err:
        raise _tampered(run_folder, err) from None


def headline_figures(metrics: Metrics) -> dict[str, Any]:
    """recall@10 and precision@10 for a table of runs: held-out figures when the run has them,
    else leave-one-out ones, labelled which."""
    kind = metrics.headline_kind
    figures = metrics.of_kind(kind)
    return {
        "figures": kind.replace("_", "-"),
        "recall@10": figures.recall_at_10,
        "precision@10": figures.precision_at_10,
    }


def _run_row(folder: Path, latest: str | None) -> dict[str, Any]:
    """One row of the runs table; a damaged run gets status "damaged: <why>"."""
    row: dict[str, Any] = {"run_id": folder.name, "latest": folder.name == latest}
    try:
        m = read_manifest(folder, verify=False)
    except RunError as err:
        empty = {"k": None, "images": None, "figures": None, "recall@10": None}
        return {**row, "status": f"damaged: {err}", **empty, "precision@10": None}
    return {
        **row,
        "status": m.status,
        "k": m.k,
        "images": m.counts.indexed,
        **headline_figures(m.metrics),
    }


def list_runs(workspace: Path) -> list[dict[str, Any]]:
    """Every run folder, oldest first, with its id, status, k and headline metrics; a damaged
    one (manifest missing, not JSON, listing no artifacts) is listed with status "damaged: ..."
    naming its manifest, so one bad folder never hides the others."""
    latest = latest_run_id(workspace)
    folder = runs_dir(workspace)
    if not folder.is_dir():
        return []
    return [
        _run_row(p, latest)
        for p in sorted(folder.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    ]


def is_damaged(row: dict[str, Any]) -> bool:
    """Whether a row of `list_runs` is a damaged run."""
    return str(row["status"]).startswith("damaged")


def prune_runs(workspace: Path, keep_last: int, stale_query_s: float = 3600) -> list[str]:
    """Delete complete runs beyond the newest `keep_last`, never LATEST; every run staging
    folder; and query-job staging folders untouched for `stale_query_s`. Call it holding the
    workspace lock: a run staging folder then belongs to a writer that is gone. Damaged run
    folders are left for a person to look at. Returns the removed names."""
    latest = latest_run_id(workspace)
    runs = [r["run_id"] for r in list_runs(workspace) if not is_damaged(r)]
    doomed = [runs_dir(workspace) / r for r in runs[: max(0, len(runs) - keep_last)] if r != latest]
    doomed += [p for p in runs_dir(workspace).glob(f"{STAGING_PREFIX}*") if p.is_dir()]
    cutoff = time.time() - stale_query_s
    doomed += [
        p
        for p in WorkspaceLayout(Path(workspace)).queries.glob(f"{STAGING_PREFIX}*")
        if p.is_dir() and p.stat().st_mtime < cutoff
    ]
    for path in doomed:
        shutil.rmtree(path)
    return [p.name for p in doomed]


def require_backbone(manifest: RunManifest, expected_fingerprint: str) -> None:
    """Refuse a run built with another backbone than the one a config asks for."""
    if manifest.fingerprint != expected_fingerprint:
        raise RunError(
            f"run {manifest.run_id} was built with backbone {manifest.fingerprint}, "
            f"but the config asks for {expected_fingerprint}; train a run with this config "
            "first, or pass its own config"
        )


def previous_catalog(workspace: Path) -> pd.DataFrame | None:
    """The catalog table of the LATEST run (for incremental scans and diffs), checked against
    the run's manifest; None before the first run, RunError when LATEST is damaged."""
    latest = latest_run_id(workspace)
    if latest is None:
        return None
    run = WorkspaceLayout(Path(workspace)).run(latest)
    manifest = read_manifest(run.root, verify=False)
    return pd.read_parquet(io.BytesIO(read_artifact(run.root, manifest, run.catalog)))
