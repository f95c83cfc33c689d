"""A workspace in object storage worked in through a local cache folder.

A writer (train, nightly, refresh, extract) takes the store's lease, brings the store's LATEST
run and its feature shards into the cache, runs as on a local workspace, then pushes the feature
shards it made and publishes the runs it made (files, manifest, then LATEST by compare-and-swap
on what it read when it started). The cache is an ordinary local workspace and may be deleted at
any time: everything in it comes back from the store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from vasrch.config import Config
from vasrch.layout import STAGING_PREFIX, BulkLayout, RunLayout, WorkspaceLayout
from vasrch.workspace import runs
from vasrch.workspace.hidden import pull_hidden
from vasrch.workspace.lease import workspace_lease
from vasrch.workspace.lock import workspace_lock
from vasrch.workspace.remote_prune import prune_store_runs
from vasrch.workspace.remote_runs import (
    StoreLatest,
    fetch_run,
    read_latest,
    switch_latest,
    upload_run,
)
from vasrch.workspace.store import WorkspaceStore
from vasrch.workspace.store_folders import StoreFolder, local_files

FEATURES = "features"


def store_of(cfg: Config) -> WorkspaceStore | None:
    """The config's workspace store, None for a workspace on local disk."""
    if cfg.workspace_url is None:
        return None
    return WorkspaceStore(cfg.workspace_url, cfg.workspace_storage_options)


def _features(store: WorkspaceStore, workspace: Path) -> tuple[StoreFolder, Path]:
    """The store's feature cache and the local one."""
    local = Path(workspace) / FEATURES
    return StoreFolder.mirroring(store, workspace, local), local


def pull_features(store: WorkspaceStore, workspace: Path) -> int:
    """Download the store's feature files the cache lacks (shards are named by content, so one
    present is the same); how many."""
    folder, local = _features(store, workspace)
    return folder.gather(local)


def push_features(store: WorkspaceStore, workspace: Path, changed_since_ns: int) -> int:
    """Upload the cache's feature files the store lacks, and the listing records changed since
    `changed_since_ns` (rewritten in place; shards and rejection files are named by what they
    hold, so one on the store is never sent again); how many."""
    folder, local = _features(store, workspace)
    on_store = set(folder.names())
    listings = WorkspaceLayout(Path(workspace)).listing("").parent
    kept = frozenset(
        name
        for name, path in local_files(local).items()
        if name in on_store
        and (path.parent != listings or path.stat().st_mtime_ns < changed_since_ns)
    )
    return len(folder.upload_files(local, skip=kept))


def publish_bulk_job(store: WorkspaceStore, workspace: Path, out: BulkLayout) -> None:
    """Upload a complete bulk job's files the store lacks (its tasks may have written their
    shards there already), its COMPLETE mark last: a job without it is not finished."""
    folder = StoreFolder.mirroring(store, workspace, out.root)
    done = out.complete.relative_to(out.root).as_posix()
    folder.upload_files(out.root, skip=frozenset([*folder.names(), done]))
    store.upload(folder.key(done), out.complete)


def _complete_runs(workspace: Path) -> set[str]:
    folder = runs.runs_dir(workspace)
    if not folder.is_dir():
        return set()
    return {
        p.name
        for p in folder.iterdir()
        if p.is_dir()
        and not p.name.startswith((".", STAGING_PREFIX))
        and RunLayout(p).manifest.is_file()
    }


def pull_latest(store: WorkspaceStore, workspace: Path) -> StoreLatest:
    """Make the cache's LATEST the store's (its run fetched, verified) and its hidden-products
    record the store's; what the store held."""
    seen = read_latest(store)
    pull_hidden(store, workspace)
    local = WorkspaceLayout(Path(workspace)).latest
    if seen.run_id is None:
        local.unlink(missing_ok=True)
    else:
        fetch_run(store, seen.run_id, workspace)
        if runs.latest_run_id(workspace) != seen.run_id:
            runs.set_latest(workspace, seen.run_id)
    return seen


def publish_new_runs(
    store: WorkspaceStore, workspace: Path, before: set[str], seen: StoreLatest
) -> list[str]:
    """Upload the runs the cache holds beyond `before`, then move the store's LATEST to the
    cache's when it is one of them; the uploaded ids."""
    made = sorted(_complete_runs(workspace) - before)
    for run_id in made:
        upload_run(store, runs.runs_dir(workspace) / run_id)
    latest = runs.latest_run_id(workspace)
    if latest in made:
        switch_latest(store, latest, seen)
    return made


@contextlib.contextmanager
def workspace_writer(cfg: Config, command: str, prune: bool = False) -> Iterator[list[str]]:
    """Hold the workspace for `command`: the local lock, and on a workspace in object storage
    the store's lease too, with the cache brought up to date first and what the block made
    published after it (only when it succeeds). With `prune`, the runs beyond runs.keep_last
    are pruned after the block (the store's and the cache's) and the list it yields is filled
    with the ids of the runs deleted from the workspace (the store's, on a store)."""
    store = store_of(cfg)
    pruned: list[str] = []
    with workspace_lock(cfg.workspace, command, cfg.runs.lock_timeout_s):
        if store is None:
            yield pruned
            if prune:
                pruned.extend(runs.prune_runs(cfg.workspace, cfg.runs.keep_last))
            return
        with workspace_lease(
            store, command, cfg.runs.lock_timeout_s, cfg.runs.lease_ttl_s
        ) as lease:
            seen = pull_latest(store, cfg.workspace)
            pull_features(store, cfg.workspace)
            before = _complete_runs(cfg.workspace)
            started_ns = time.time_ns()
            yield pruned
            lease.check()
            push_features(store, cfg.workspace, started_ns)
            publish_new_runs(store, cfg.workspace, before, seen)
            if prune:
                runs.prune_runs(cfg.workspace, cfg.runs.keep_last)
                pruned.extend(prune_store_runs(store, cfg.runs.keep_last))
