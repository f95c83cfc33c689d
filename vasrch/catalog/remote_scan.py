"""Scan remote photos: the sha256 of each, downloading only what changed since the last scan.

The listing record (a Parquet table in the workspace: path, etag, bytes, modified, sha256)
remembers what each URL held. An object store's object whose (path, validator, size) is
recorded keeps its sha256 without a byte read; a web server is asked conditionally
(If-None-Match / If-Modified-Since) and a 304 keeps it too. Everything else is downloaded (in
`Fetching.workers` threads), hashed and, with a cache_dir, kept; `on_bytes`, when given, gets
the bytes too (extraction embeds them at once, so a new photo is downloaded only once). Each
failure is a rejection with the URL and the reason; the next scan tries it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from vasrch.addresses import HTTP_SCHEMES, url_scheme
from vasrch.atomic_files import atomic_path
from vasrch.catalog.connections import close_idle
from vasrch.catalog.downloads import fetch_url
from vasrch.catalog.object_store import StoredObject, read_object, stat_object
from vasrch.catalog.sources import Fetching, keep

RECORD_COLUMNS = ["path", "etag", "bytes", "modified", "sha256"]
RemoteItem = tuple[str, str, StoredObject | None]  # image_id, URL, the object as listed
# Called with (image_id, URL, sha256, bytes) for each photo the scan downloads.
BytesSink = Callable[[str, str, str, bytes], None]


@dataclass(frozen=True)
class Recorded:
    """What a URL held at the last scan: its validator, size, last-modified and sha256."""

    etag: str
    size: int
    modified: str
    sha256: str


@dataclass(frozen=True)
class Hashed:
    """A remote photo hashed by this scan, and what to record for it."""

    image_id: str
    path: str
    sha256: str
    size: int
    modified_ns: int
    record: Recorded


Read = tuple[Hashed, bytes | None]  # a photo hashed, with its bytes when it was downloaded


def read_record(path: Path | None) -> dict[str, Recorded]:
    """The listing record at `path`, by URL (empty when there is none yet)."""
    if path is None or not Path(path).is_file():
        return {}
    columns = pq.read_table(path, columns=RECORD_COLUMNS).to_pydict()
    return {
        url: Recorded(etag, size, modified, sha)
        for url, etag, size, modified, sha in zip(*columns.values(), strict=True)
    }


def same_record(record: dict[str, Recorded], hashed: list[Hashed]) -> bool:
    """True when `hashed` holds exactly what `record` does (nothing to write)."""
    return len(record) == len(hashed) and all(record.get(h.path) is h.record for h in hashed)


def write_record(path: Path, hashed: Iterable[Hashed]) -> None:
    """Replace the listing record with the photos of this scan."""
    rows = [(h.path, h.record.etag, h.record.size, h.record.modified, h.sha256) for h in hashed]
    table = pd.DataFrame(rows, columns=RECORD_COLUMNS).astype({"bytes": "int64"})
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def _too_large(size: int, limit: int) -> str:
    return f"file too large: {size} bytes > features.max_file_bytes {limit}; not read"


def _reused(item: RemoteItem, known: Recorded | None) -> Hashed | None:
    """A listed object the record already holds with the same validator and size: its
    recorded sha256, read from no byte (None when it must be read)."""
    image_id, path, obj = item
    if obj is None or known is None or not obj.etag:
        return None
    if (known.etag, known.size) != (obj.etag, obj.size):
        return None
    return Hashed(image_id, path, known.sha256, obj.size, obj.modified_ns, known)


def _from_store(
    image_id: str,
    obj: StoredObject | None,
    path: str,
    known: Recorded | None,
    max_bytes: int | None,
    fetching: Fetching,
) -> Read | str:
    obj = obj or stat_object(path, fetching.storage_options)
    if max_bytes is not None and obj.size > max_bytes:
        return _too_large(obj.size, max_bytes)
    reused = _reused((image_id, path, obj), known)
    if reused is not None:
        return reused, None
    data = read_object(path, max_bytes, fetching.storage_options, fetching.policy)
    sha = hashlib.sha256(data).hexdigest()
    record = Recorded(obj.etag, len(data), str(obj.modified_ns), sha)
    return Hashed(image_id, path, sha, len(data), obj.modified_ns, record), data


def _from_web(
    image_id: str, path: str, known: Recorded | None, max_bytes: int | None, fetching: Fetching
) -> Read:
    etag, modified = (known.etag, known.modified) if known else ("", "")
    fetched = fetch_url(path, max_bytes, fetching.policy, etag, modified)
    if fetched.data is None and known is not None:
        return Hashed(image_id, path, known.sha256, known.size, 0, known), None
    data = fetched.data or b""
    sha = hashlib.sha256(data).hexdigest()
    record = Recorded(fetched.etag, len(data), fetched.last_modified, sha)
    return Hashed(image_id, path, sha, len(data), 0, record), data


def _hash_one(
    item: RemoteItem,
    record: dict[str, Recorded],
    max_bytes: int | None,
    fetching: Fetching,
    on_bytes: BytesSink | None,
) -> Hashed | str:
    image_id, path, obj = item
    try:
        if url_scheme(path) in HTTP_SCHEMES:
            found = _from_web(image_id, path, record.get(path), max_bytes, fetching)
        else:
            found = _from_store(image_id, obj, path, record.get(path), max_bytes, fetching)
    except OSError as err:
        return str(err) or type(err).__name__
    if isinstance(found, str):
        return found
    hashed, data = found
    if data is not None:
        keep(fetching, hashed.sha256, data)
        if on_bytes is not None:
            on_bytes(image_id, path, hashed.sha256, data)
    return hashed


def hash_remote(
    items: list[RemoteItem],
    record: dict[str, Recorded],
    max_bytes: int | None,
    fetching: Fetching,
    on_bytes: BytesSink | None = None,
) -> tuple[list[Hashed], list[tuple[str, str, str]]]:
    """(photos hashed, rejections (image_id, URL, reason)) for `items` (image_id, URL, the
    object as listed or None): listed objects the record holds unchanged (and under the cap)
    at once, the others read `fetching.workers` at a time, each one read handed to
    `on_bytes`."""
    found: list[Hashed | str | None] = [
        _reused(item, record.get(item[1]))
        if item[2] is None or max_bytes is None or item[2].size <= max_bytes
        else None
        for item in items
    ]
    todo = [i for i, f in enumerate(found) if f is None]
    with ThreadPoolExecutor(max(1, fetching.workers), thread_name_prefix="vasrch-fetch") as pool:
        done = pool.map(lambda i: _hash_one(items[i], record, max_bytes, fetching, on_bytes), todo)
        for i, result in zip(todo, done, strict=True):
            found[i] = result
    close_idle()  # the scan's threads are gone: their kept-alive connections too
    hashed = [f for f in found if isinstance(f, Hashed)]
    rejected = [
        (image_id, path, f)
        for (image_id, path, _), f in zip(items, found, strict=True)
        if isinstance(f, str)
    ]
    return hashed, rejected
