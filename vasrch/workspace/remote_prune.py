"""Pruning the runs of a workspace in object storage, holding its lease.

A run is deleted manifest first, then its files: a run whose deletion stopped half-way has no
manifest, so it is never read or fetched as a run, and the next prune finishes it. LATEST's run
is never deleted (LATEST is read again before each run goes), nor a run newer than LATEST
without a manifest, which may be one being published; an older one without a manifest is what a
failed publication or an interrupted prune left.
"""

from __future__ import annotations

from vasrch.workspace.remote_runs import MANIFEST, read_latest, run_key
from vasrch.workspace.store import WorkspaceStore


def store_runs(store: WorkspaceStore) -> dict[str, list[str]]:
    """The keys of each run folder on the store, by run id."""
    found: dict[str, list[str]] = {}
    for key in store.keys("runs"):
        parts = key.split("/")
        if len(parts) > 2:
            found.setdefault(parts[1], []).append(key)
    return found


def delete_run(store: WorkspaceStore, run_id: str, keys: list[str]) -> None:
    """Delete a run's keys, its manifest first."""
    manifest = run_key(run_id, MANIFEST)
    store.delete(sorted(keys, key=lambda k: k != manifest))


def prune_store_runs(store: WorkspaceStore, keep_last: int) -> list[str]:
    """Delete the store's complete runs beyond the newest `keep_last`, never LATEST's, and the
    leftovers without a manifest older than LATEST; the deleted run ids. Call it holding the
    workspace's lease."""
    found = store_runs(store)
    complete = sorted(r for r, keys in found.items() if run_key(r, MANIFEST) in keys)
    latest = read_latest(store).run_id
    doomed = complete[: max(0, len(complete) - keep_last)]
    doomed += sorted(r for r in set(found) - set(complete) if latest is not None and r < latest)
    removed = []
    for run_id in doomed:
        if run_id != read_latest(store).run_id:
            delete_run(store, run_id, found[run_id])
            removed.append(run_id)
    return removed
