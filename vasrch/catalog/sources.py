"""Where a photo's bytes come from: a local file, an object store (s3://, gs://, az://) or a web
server (https://), read with the same byte cap; `cache_dir` keeps downloaded bytes by sha256."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vasrch.addresses import HTTP_SCHEMES, is_url, url_scheme
from vasrch.atomic_files import atomic_path
from vasrch.catalog.downloads import FetchPolicy, fetch_url
from vasrch.catalog.object_store import read_object
from vasrch.hashing import read_bounded


@dataclass(frozen=True)
class Fetching:
    """How remote photos are read: the object store's options, the folder keeping downloaded
    bytes (None: nothing on disk), the downloads run at once and the HTTP policy."""

    storage_options: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    workers: int = 16
    policy: FetchPolicy = field(default_factory=FetchPolicy)


def cached_copy(fetching: Fetching, sha256: str) -> Path | None:
    """Where `cache_dir` keeps the bytes of `sha256`; None without a cache_dir."""
    if fetching.cache_dir is None:
        return None
    return Path(fetching.cache_dir) / sha256[:2] / sha256


def keep(fetching: Fetching, sha256: str, data: bytes) -> None:
    """Store downloaded bytes in `cache_dir` (when set and not there yet)."""
    copy = cached_copy(fetching, sha256)
    if copy is None or copy.exists():
        return
    copy.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(copy) as tmp:
        Path(tmp).write_bytes(data)


def download(path: str, max_bytes: int | None, fetching: Fetching) -> bytes:
    """The bytes at URL `path`, read under the cap (OSError says why not)."""
    if url_scheme(path) in HTTP_SCHEMES:
        data = fetch_url(path, max_bytes, fetching.policy).data
        assert data is not None  # an unconditional request is never answered 304
        return data
    return read_object(path, max_bytes, fetching.storage_options, fetching.policy)


def read_photo(
    path: str | os.PathLike[str],
    max_bytes: int | None,
    fetching: Fetching | None = None,
    sha256: str | None = None,
) -> bytes:
    """A photo's bytes from wherever `path` names (the cache_dir copy of `sha256` first), at
    most `max_bytes`; an OSError (TooLargeError, FetchError, StoreError) says why not."""
    fetching = fetching or Fetching()
    if not is_url(str(path)):
        return read_bounded(path, max_bytes)
    copy = cached_copy(fetching, sha256) if sha256 else None
    if copy is not None and copy.is_file():
        return read_bounded(copy, max_bytes)
    return download(str(path), max_bytes, fetching)
