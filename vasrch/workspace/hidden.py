"""Products hidden from every answer at once, faster than a refresh can drop them.

The record is `<workspace>/hidden-products.json` ({"version": 1, "products": {id: {"since",
"by"}}}), replaced atomically, so readers never see half of it; changes are serialised by their
own small lock (`.hidden.lock`), not the workspace's writer lock, so hiding never waits for a
training run. Every searcher (CLI, flows, the service, bulk) leaves hidden products out. A
product stays hidden across refreshes and retrains until it is unhidden, or until the catalog
itself drops it (`settle`): once the catalog has caught up, the record is no longer needed.

On a workspace in object storage the record is the store's `hidden-products.json`: a change
reads it with its ETag and writes it back by compare-and-swap (`If-Match`, `If-None-Match: *`
for the first), reading again when another writer changed it first, so no change is lost; the
local cache keeps a copy that searchers read and that `pull_hidden` brings up to date.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vasrch.atomic_files import write_text_atomic
from vasrch.errors import DataError
from vasrch.layout import WorkspaceLayout
from vasrch.workspace.store import StoreConflict, StoreUnavailable, WorkspaceStore

T = TypeVar("T")
Entries = dict[str, dict[str, str]]

VERSION = 1
HIDDEN_KEY = WorkspaceLayout(Path(".")).hidden_products.name
_LOCK_NAME = ".hidden.lock"
_MAX_BYTES = 64 * 1024 * 1024
_STORE_ATTEMPTS = 50  # compare-and-swap rounds lost to other writers before giving up


class HiddenRecordError(DataError):
    """The record exists but cannot be read as one (damaged, or not vasrch's)."""


@dataclass(frozen=True)
class HiddenProducts:
    """The hidden products and, for each, when and by whom it was hidden."""

    entries: dict[str, dict[str, str]]

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.entries)


def _path(workspace: Path) -> Path:
    return WorkspaceLayout(Path(workspace)).hidden_products


def record_stamp(workspace: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of the record, to notice a change cheaply; None when absent."""
    try:
        st = os.stat(_path(workspace))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _parse(raw: bytes, where: str) -> Entries:
    """The entries of a record's bytes; HiddenRecordError when they are not one."""
    try:
        data = json.loads(raw)
        entries = data["products"]
        valid = data.get("version") == VERSION and isinstance(entries, dict)
        valid = valid and all(isinstance(v, dict) for v in entries.values())
    except (ValueError, TypeError, KeyError):
        valid = False
    if len(raw) > _MAX_BYTES or not valid:
        raise HiddenRecordError(
            f"{where} is not a vasrch hidden-products record (version {VERSION}); restore it "
            "or delete it to unhide every product"
        )
    return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in entries.items()}


def _encode(entries: Entries) -> str:
    return json.dumps({"version": VERSION, "products": dict(sorted(entries.items()))}, indent=1)


def read_hidden(workspace: Path) -> HiddenProducts:
    """The workspace's hidden products (none when there is no record)."""
    path = _path(workspace)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return HiddenProducts({})
    except OSError as err:
        raise HiddenRecordError(f"{path}: cannot read the hidden products: {err}") from None
    with os.fdopen(fd, "rb") as file:
        raw = file.read(_MAX_BYTES + 1)
    return HiddenProducts(_parse(raw, str(path)))


def _change_here(workspace: Path, edit: Callable[[Entries], T]) -> T:
    """`edit` applied to the local record's entries, written back atomically under its lock."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    fd = os.open(workspace / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        entries = dict(read_hidden(workspace).entries)
        before = dict(entries)
        result = edit(entries)
        if entries != before:
            write_text_atomic(_path(workspace), _encode(entries) + "\n")
    finally:
        os.close(fd)
    return result


def _keep_copy(workspace: Path, body: bytes | None) -> None:
    """Make the cache's record the store's `body` (none: no record)."""
    path = _path(workspace)
    if body is None:
        path.unlink(missing_ok=True)
    elif not path.is_file() or path.read_bytes() != body:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, body.decode("utf-8"))


def _change_on_store(store: WorkspaceStore, workspace: Path, edit: Callable[[Entries], T]) -> T:
    """`edit` applied to the store's record by compare-and-swap, read again and re-applied
    whenever another writer changed it first; the cache then keeps the record written."""
    where = f"{store.url}/{HIDDEN_KEY}"
    for _ in range(_STORE_ATTEMPTS):
        found = store.get_versioned(HIDDEN_KEY)
        entries = _parse(found.data, where) if found is not None else {}
        before = dict(entries)
        result = edit(entries)
        body = found.data if found is not None else None
        if entries != before:
            body = (_encode(entries) + "\n").encode()
            try:
                if found is None:
                    store.create(HIDDEN_KEY, body)
                else:
                    store.replace(HIDDEN_KEY, body, found.etag)
            except StoreConflict:
                continue
        _keep_copy(workspace, body)
        return result
    raise StoreUnavailable(f"{where}: other writers kept changing it ({_STORE_ATTEMPTS} tries)")


def _change(workspace: Path, edit: Callable[[Entries], T], store: WorkspaceStore | None) -> T:
    if store is None:
        return _change_here(workspace, edit)
    return _change_on_store(store, workspace, edit)


def pull_hidden(store: WorkspaceStore, workspace: Path) -> None:
    """Make the cache's copy of the record the store's (checked before it is kept)."""
    body = store.get(HIDDEN_KEY)
    if body is not None:
        _parse(body, f"{store.url}/{HIDDEN_KEY}")
    _keep_copy(workspace, body)


def hide(
    workspace: Path, product_ids: Iterable[str], by: str, store: WorkspaceStore | None = None
) -> list[str]:
    """Hide the products (ids already hidden keep their first record) in the workspace, or in
    `store` when it lives in object storage; the ids newly hidden."""
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ids = list(dict.fromkeys(product_ids))

    def edit(entries: Entries) -> list[str]:
        new = [p for p in ids if p not in entries]
        entries.update({p: {"since": since, "by": by} for p in new})
        return new

    return _change(workspace, edit, store)


def _drop(entries: Entries, doomed: list[str]) -> list[str]:
    for p in doomed:
        del entries[p]
    return doomed


def unhide(
    workspace: Path, product_ids: Iterable[str], store: WorkspaceStore | None = None
) -> list[str]:
    """Show the products again; the ids that were hidden."""
    ids = list(dict.fromkeys(product_ids))
    return _change(
        workspace, lambda entries: _drop(entries, [p for p in ids if p in entries]), store
    )


def settle(
    workspace: Path, catalog_products: Iterable[str], store: WorkspaceStore | None = None
) -> list[str]:
    """Forget the hidden products the catalog no longer has (it dropped them itself); the ids
    forgotten. Called by the writers that publish a run from the catalog."""
    present = set(catalog_products)
    return _change(
        workspace, lambda entries: _drop(entries, [p for p in entries if p not in present]), store
    )
