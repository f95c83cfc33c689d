"""Object storage through fsspec: s3://, gs://, az:// (and any protocol fsspec knows).

Credentials and endpoints come from each store's standard sources (for S3: the AWS_* variables
including AWS_ENDPOINT_URL, profiles, instance roles) plus `storage_options`, passed to the
filesystem as given. The store's own validators (ETag, version id or generation, size,
last-modified) describe an object without reading it, so an unchanged one is never downloaded
again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vasrch.addresses import S3_SCHEMES, url_scheme
from vasrch.catalog.downloads import FetchError, FetchPolicy, fetch_url
from vasrch.catalog.s3_listing import find_s3
from vasrch.catalog.s3_signing import get_url
from vasrch.errors import ConfigError, DataError
from vasrch.hashing import TooLargeError

# protocol -> (the package fsspec needs for it, vasrch's extra that brings it)
EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}
_VERSION_KEYS = ("VersionId", "version_id", "generation")


@dataclass(frozen=True)
class StoredObject:
    """One object as the store lists it: its URL, size, validator (ETag plus version id when the
    store gives one) and last-modified time (ns since the epoch; 0 when unknown)."""

    url: str
    size: int
    etag: str
    modified_ns: int


class StoreError(OSError):
    """An object that could not be listed or read; the message says why."""


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for `url`'s protocol (instances are cached by fsspec); ConfigError
    naming the extra to install when its package is missing."""
    protocol = url_scheme(url)
    try:
        import fsspec

        return fsspec.filesystem(protocol, **dict(storage_options or {}))
    except ImportError as err:
        package, extra = EXTRAS.get(protocol, (protocol, protocol))
        raise ConfigError(
            f'{url}: reading {protocol}:// needs {package}: pip install "vasrch[{extra}]" ({err})'
        ) from None
    except ValueError as err:
        raise ConfigError(f"{url}: no storage known for {protocol}:// ({err})") from None


def _url(protocol: str, path: str) -> str:
    return f"{protocol}://{path}"


def _modified_ns(info: Mapping[str, Any]) -> int:
    for key in ("LastModified", "last_modified", "updated", "mtime"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, int | float):
            return int(value * 1e9)
        if isinstance(value, str):
            try:
                when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return int(when.timestamp() * 1e9)
    return 0


def _validator(info: Mapping[str, Any]) -> str:
    etag = next((str(info[k]) for k in ("ETag", "etag", "md5Hash") if info.get(k)), "")
    version = next((str(info[k]) for k in _VERSION_KEYS if info.get(k)), "")
    return etag.strip('"') + (f"@{version}" if version else "")


def described(protocol: str, info: Mapping[str, Any]) -> StoredObject:
    """A StoredObject from fsspec's description of one object."""
    return StoredObject(
        _url(protocol, info["name"]),
        int(info.get("size") or 0),
        _validator(info),
        _modified_ns(info),
    )


def _folder_lister(fs: Any, protocol: str) -> Callable[[str], list[dict[str, Any]]]:
    """How one folder is listed, recursively: S3 through s3_listing (a tenth of botocore's
    CPU), any other store through fsspec's find."""
    if protocol in ("s3", "s3a"):
        return lambda folder: find_s3(fs, folder)
    return lambda folder: list(fs.find(folder, detail=True).values())


def list_objects(
    url: str, storage_options: Mapping[str, Any] | None = None, workers: int = 16
) -> list[StoredObject]:
    """Every object under the prefix `url`, recursively, sorted by key: the prefix is listed
    one level deep, then each folder below it in paged listings, `workers` folders at once
    (see _folder_lister);
    DataError when it cannot be listed (no such bucket, no access)."""
    fs = filesystem(url, storage_options)
    protocol = url_scheme(url)
    root = fs._strip_protocol(url).rstrip("/")
    try:
        fs.invalidate_cache()  # a long-lived filesystem must not answer from an old listing
        bucket = root.split("/", 1)[0]
        if not fs.exists(bucket):
            raise DataError(f"{url}: no such bucket or container: {bucket}")
        top = fs.ls(root, detail=True) if fs.isdir(root) else []
        folders = [e["name"] for e in top if e.get("type") == "directory"]
        found = [e for e in top if e.get("type") != "directory"]
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="vasrch-list") as pool:
            for below in pool.map(_folder_lister(fs, protocol), folders):
                found += below
    except DataError:
        raise
    except Exception as err:  # each store's client raises its own errors
        raise DataError(f"{url}: cannot list the catalog ({type(err).__name__}: {err})") from None
    return sorted((described(protocol, e) for e in found), key=lambda o: o.url)


def stat_object(url: str, storage_options: Mapping[str, Any] | None = None) -> StoredObject:
    """One object's description (a HEAD request); StoreError when it is missing or unreadable."""
    fs = filesystem(url, storage_options)
    try:
        fs.invalidate_cache(url)
        return described(url_scheme(url), fs.info(url))
    except FileNotFoundError:
        raise StoreError(f"{url}: object not found") from None
    except Exception as err:  # each store's client raises its own errors
        raise StoreError(f"{url}: cannot read ({type(err).__name__}: {err})") from None


def read_object(
    url: str,
    max_bytes: int | None,
    storage_options: Mapping[str, Any] | None = None,
    policy: FetchPolicy | None = None,
) -> bytes:
    """An object's bytes, at most `max_bytes` + 1 requested (TooLargeError past the cap). S3
    objects are read with a GET presigned in this thread (vasrch.catalog.s3_signing) under
    `policy` (timeouts, retries with backoff)."""
    fs = filesystem(url, storage_options)
    try:
        if url_scheme(url) in S3_SCHEMES:
            data = _read_s3(fs, url, max_bytes, policy or FetchPolicy())
        else:
            data = fs.cat_file(url, start=0, end=None if max_bytes is None else max_bytes + 1)
    except FileNotFoundError:
        raise StoreError(f"{url}: object not found") from None
    except (StoreError, TooLargeError):
        raise
    except Exception as err:  # each store's client raises its own errors
        raise StoreError(f"{url}: cannot read ({type(err).__name__}: {err})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLargeError(f"file too large: more than features.max_file_bytes {max_bytes} bytes")
    return data


def _read_s3(fs: Any, url: str, max_bytes: int | None, policy: FetchPolicy) -> bytes:
    bucket, _, key = fs._strip_protocol(url).partition("/")
    signed = get_url(fs, bucket, key)
    try:
        data = fetch_url(signed, max_bytes, policy).data
    except FetchError as err:
        if str(err).startswith("HTTP 404"):
            raise StoreError(f"{url}: object not found") from None
        if str(err).startswith("file too large"):
            raise TooLargeError(str(err)) from None
        raise
    assert data is not None  # an unconditional request is never answered 304
    return data
