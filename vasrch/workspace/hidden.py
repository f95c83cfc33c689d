"""Products hidden from every answer at once, faster than a refresh can drop them.

The record is `<workspace>/hidden-products.json` ({"version": 1, "products": {id: {"since",
"by"}}}), replaced atomically, so readers never see half of it; changes are serialised by their
own small lock (`.hidden.lock`), not the workspace's writer lock, so hiding never waits for a
training run. Every searcher (CLI, flows, the service, bulk) leaves hidden products out. A
product stays hidden across refreshes and retrains until it is unhidden, or until the catalog
itself drops it (`settle`): once the catalog has caught up, the record is no longer needed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vasrch.atomic_files import write_text_atomic
from vasrch.errors import DataError
from vasrch.layout import WorkspaceLayout

VERSION = 1
_LOCK_NAME = ".hidden.lock"
_MAX_BYTES = 64 * 1024 * 1024


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
    try:
        data = json.loads(raw)
        entries = data["products"]
        valid = data.get("version") == VERSION and isinstance(entries, dict)
        valid = valid and all(isinstance(v, dict) for v in entries.values())
    except (ValueError, TypeError, KeyError):
        valid = False
    if len(raw) > _MAX_BYTES or not valid:
        raise HiddenRecordError(
            f"{path} is not a vasrch hidden-products record (version {VERSION}); restore it "
            "or delete it to unhide every product"
        )
    return HiddenProducts(
        {str(k): {str(a): str(b) for a, b in v.items()} for k, v in entries.items()}
    )


@contextmanager
def _changing(workspace: Path) -> Iterator[dict[str, dict[str, str]]]:
    """The record's entries to change in place, written back atomically under its lock."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    fd = os.open(workspace / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        entries = dict(read_hidden(workspace).entries)
        before = dict(entries)
        yield entries
        if entries != before:
            body = {"version": VERSION, "products": dict(sorted(entries.items()))}
            write_text_atomic(_path(workspace), json.dumps(body, indent=1) + "\n")
    finally:
        os.close(fd)


def hide(workspace: Path, product_ids: Iterable[str], by: str) -> list[str]:
    """Hide the products (ids already hidden keep their first record); the ids newly hidden."""
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with _changing(workspace) as entries:
        new = [p for p in dict.fromkeys(product_ids) if p not in entries]
        entries.update({p: {"since": since, "by": by} for p in new})
    return new


def unhide(workspace: Path, product_ids: Iterable[str]) -> list[str]:
    """Show the products again; the ids that were hidden."""
    with _changing(workspace) as entries:
        shown = [p for p in dict.fromkeys(product_ids) if p in entries]
        for p in shown:
            del entries[p]
    return shown


def settle(workspace: Path, catalog_products: Iterable[str]) -> list[str]:
    """Forget the hidden products the catalog no longer has (it dropped them itself); the ids
    forgotten. Called by the writers that publish a run from the catalog."""
    present = set(catalog_products)
    with _changing(workspace) as entries:
        gone = [p for p in entries if p not in present]
        for p in gone:
            del entries[p]
    return gone
