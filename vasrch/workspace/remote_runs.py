"""Runs in a workspace's object store: published atomically, fetched verified.

Publication uploads a complete local run's files first and its manifest (every file's sha256)
last, then switches runs/LATEST by compare-and-swap on the ETag it had when the writer started:
a run without its manifest is never read, LATEST never names a run whose manifest is missing,
and of two writers that started from the same LATEST only the first to switch it wins. A fetch
copies a run into the local cache (a local workspace) and checks every file against the manifest
before the run appears there under its own name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vasrch.hashing import sha256_file
from vasrch.layout import RunLayout, WorkspaceLayout
from vasrch.workspace.hidden import pull_hidden
from vasrch.workspace.runs import (
    RUN_ID,
    RunError,
    latest_run_id,
    read_manifest,
    set_latest,
)
from vasrch.workspace.store import StoreConflict, WorkspaceStore

LATEST_KEY = "runs/LATEST"
MANIFEST = RunLayout(Path(".")).manifest.name


def run_key(run_id: str, name: str = "") -> str:
    """The key of a run's file `name` (or of the run's prefix) in the store."""
    return f"runs/{run_id}/{name}" if name else f"runs/{run_id}"


@dataclass(frozen=True)
class StoreLatest:
    """The run the store's LATEST names (None before the first) and the ETag it was read at."""

    run_id: str | None
    etag: str | None


def read_latest(store: WorkspaceStore) -> StoreLatest:
    """runs/LATEST of the store with its ETag; RunError when it names no run id."""
    found = store.get_versioned(LATEST_KEY)
    if found is None:
        return StoreLatest(None, None)
    name = found.data.decode("utf-8", "replace").strip()
    if not RUN_ID.fullmatch(name):
        raise RunError(f"{store.url}/{LATEST_KEY} names {name[:80]!r}, which is not a run id")
    return StoreLatest(name, found.etag)


def upload_run(store: WorkspaceStore, run_folder: Path) -> str:
    """Upload a complete local run (verified first): its files (but those this process sent
    there already, with the same sha256), then its manifest; its id."""
    manifest = read_manifest(run_folder, verify=True)
    run_id = run_folder.name
    for name, digest in sorted(manifest.artifacts.items()):
        key = run_key(run_id, name)
        if store.uploaded(key) != digest:  # an index shared with Dask tasks is there already
            store.upload(key, run_folder / name, digest)
    store.upload(run_key(run_id, MANIFEST), RunLayout(run_folder).manifest)
    return run_id


def switch_latest(store: WorkspaceStore, run_id: str, seen: StoreLatest) -> None:
    """Point the store's LATEST at `run_id` if it still holds what `seen` read (created when
    there was none); StoreConflict when another writer moved it first."""
    data = f"{run_id}\n".encode()
    try:
        if seen.etag is None:
            store.create(LATEST_KEY, data)
        else:
            store.replace(LATEST_KEY, data, seen.etag)
    except StoreConflict:
        raise StoreConflict(
            f"{store.url}/{LATEST_KEY} moved on from {seen.run_id} while run {run_id} was "
            "published; the run is on the store but not promoted"
        ) from None


def publish_run(store: WorkspaceStore, run_folder: Path, seen: StoreLatest) -> str:
    """Upload a complete local run, then make it the store's LATEST (compare-and-swap on what
    `seen` read); its id."""
    run_id = upload_run(store, run_folder)
    switch_latest(store, run_id, seen)
    return run_id


def inside_folder(name: str) -> PurePosixPath:
    """A manifest's artifact name, which must stay inside its folder; else RunError."""
    rel = PurePosixPath(name)
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise RunError(f"artifact {name!r} lies outside the run's folder")
    return rel


def fetch_file(store: WorkspaceStore, key: str, target: Path, digest: str) -> None:
    """Download `key` to `target` (streamed to disk) if its bytes have the sha256 `digest`,
    else RunError and no `target`."""
    if not store.download(key, target):
        raise RunError(f"{store.url}/{key} is missing: the run is incomplete")
    if sha256_file(target) != digest:
        target.unlink()
        raise RunError(f"{store.url}/{key} does not match its sha256 in the run's manifest")


def fetch_run(store: WorkspaceStore, run_id: str, workspace: Path) -> Path:
    """runs/<run_id> of the local workspace `workspace`, downloaded from the store unless it is
    already there whole; every file is checked against the manifest before the folder takes
    its name. RunError when the store's run has no manifest or a file differs from it."""
    if not RUN_ID.fullmatch(run_id):
        raise RunError(f"{run_id[:80]!r} is not a run id")
    final = WorkspaceLayout(Path(workspace)).run(run_id).root
    if RunLayout(final).manifest.is_file():
        read_manifest(final, verify=True)
        return final
    staging = final.with_name(f".fetch-{run_id}-{uuid.uuid4().hex[:8]}")
    try:
        manifest_key = run_key(run_id, MANIFEST)
        data = store.get(manifest_key)
        if data is None:
            raise RunError(f"{store.url}/{manifest_key} is missing: the run is incomplete")
        layout = RunLayout(staging)
        layout.root.mkdir(parents=True)
        layout.manifest.write_bytes(data)
        manifest = read_manifest(staging, verify=False)
        for name, digest in manifest.artifacts.items():
            fetch_file(store, run_key(run_id, name), staging / inside_folder(name), digest)
        try:
            os.rename(staging, final)
        except OSError:
            if not RunLayout(final).manifest.is_file():  # not another fetch that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def follow_or_why(store: WorkspaceStore, workspace: Path, run: str | None = None) -> str | None:
    """`follow_latest`, or with `run` (a run id) the store's hidden-products record and that
    run fetched unless the cache holds it; else why it could not (the store unreachable, a run
    failing its hashes): the local workspace then keeps what it had."""
    try:
        if run is None or not RUN_ID.fullmatch(run):  # a run given as a folder is local
            follow_latest(store, workspace)
        else:
            pull_hidden(store, workspace)
            if not WorkspaceLayout(Path(workspace)).run(run).manifest.is_file():
                fetch_run(store, run, workspace)
    except Exception as err:  # the store's client raises its own errors
        return f"{store.url}: {type(err).__name__}: {err}"
    return None


def follow_latest(store: WorkspaceStore, workspace: Path) -> str | None:
    """Fetch the store's LATEST run into the local workspace and point its LATEST there, and
    copy the store's hidden-products record; the run id (None when the store has no run yet)."""
    latest = read_latest(store)
    pull_hidden(store, workspace)
    if latest.run_id is None:
        return None
    fetch_run(store, latest.run_id, workspace)
    if latest_run_id(workspace) != latest.run_id:
        set_latest(workspace, latest.run_id)
    return latest.run_id
