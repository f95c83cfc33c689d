"""A workspace in object storage: bytes put, got and listed under one prefix (fsspec), with
conditional writes (create-once and compare-and-swap on an ETag) and retries of throttling,
5xx answers and lost connections.

Conditional writes (vasrch.workspace.conditional_writes) work on S3, GCS and Azure Blob; an
"ETag" here is the version each store's compare-and-swap names (GCS: the generation). Other
stores are refused by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from vasrch.addresses import S3_SCHEMES, WORKSPACE_STORE_SCHEMES, url_scheme
from vasrch.atomic_files import atomic_path
from vasrch.catalog.object_store import filesystem
from vasrch.errors import BusyError, ConfigError, VasrchError
from vasrch.workspace.conditional_writes import version, write_if

T = TypeVar("T")

# S3's codes for a conditional write that lost: the condition failed, or a concurrent
# conditional write on the same key was in flight (AWS answers 409 then).
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "BlobNotFound", "ContainerNotFound"}


class StoreUnavailable(VasrchError, ConnectionError):
    """The workspace's store did not answer (or kept throttling) through every retry."""


class StoreConflict(BusyError):
    """A conditional write the store refused: another writer changed the object first."""


def _code_and_status(err: BaseException) -> tuple[str, int]:
    """The store's error code and HTTP status behind `err` (or its causes): botocore's
    ClientError (s3fs), azure-core's HttpResponseError (adlfs), gcsfs's HttpError."""
    seen: BaseException | None = err
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(error.get("Code", "")), int(status or 0)
        status = getattr(seen, "status_code", None) or getattr(seen, "code", None)
        if isinstance(status, int):
            return str(getattr(seen, "error_code", "") or ""), status
        seen = seen.__cause__
    return "", 0


def is_conflict(err: BaseException) -> bool:
    """Whether `err` is the store refusing a conditional write."""
    code, status = _code_and_status(err)
    return code in _CONFLICT_CODES or status in (409, 412)


def is_transient(err: BaseException) -> bool:
    """Whether retrying may help: throttling, a 5xx answer, a timeout or a lost connection."""
    if is_conflict(err) or isinstance(err, FileNotFoundError | FileExistsError | PermissionError):
        return False
    code, status = _code_and_status(err)
    if code or status:
        return code in _THROTTLE_CODES or status == 429 or status >= 500
    return isinstance(err, OSError | TimeoutError) or "connect" in type(err).__name__.lower()


def _is_missing(err: BaseException) -> bool:
    code, status = _code_and_status(err)
    return isinstance(err, FileNotFoundError) or code in _MISSING_CODES or status == 404


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the ETag they were read at (what a compare-and-swap names)."""

    data: bytes
    etag: str


# What this process uploaded, by (store URL, key): the sha256 of the file it sent there.
_uploaded: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class WorkspaceStore:
    """The objects under the prefix `url` (s3://bucket/prefix); keys are relative POSIX paths."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    retries: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    connect_timeout_s: float | None = None  # None: the client's own (botocore: 60 s)
    read_timeout_s: float | None = None

    @cached_property
    def fs(self) -> Any:
        """The fsspec filesystem, made once per store: its own instance, whose client does not
        retry on its own (the store's retries and backoff are the only ones) unless
        storage_options' config_kwargs say otherwise."""
        options = {**self.storage_options, "skip_instance_cache": True}
        if url_scheme(self.url) in S3_SCHEMES:
            config = {"retries": {"total_max_attempts": 1}, **options.get("config_kwargs", {})}
            timeouts = {"connect_timeout": self.connect_timeout_s}
            timeouts["read_timeout"] = self.read_timeout_s
            config.update({k: v for k, v in timeouts.items() if v is not None})
            options["config_kwargs"] = config
        fs = filesystem(self.url, options)
        if hasattr(fs, "retries"):  # s3fs's loop around each request
            fs.retries = 1
        return fs

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (sent to a Dask worker) without its client: the worker makes its own, from
        the storage options and its own environment."""
        return {k: v for k, v in self.__dict__.items() if k != "fs"}

    def path(self, key: str) -> str:
        """The store path of `key` (bucket/prefix/key, no protocol)."""
        root = self.fs._strip_protocol(self.url).rstrip("/")
        return f"{root}/{key}" if key else root

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as err:  # each store's client raises its own errors
                if not is_transient(err):
                    raise
                if attempt == self.retries:
                    raise StoreUnavailable(
                        f"{self.url}: {what} failed after {self.retries + 1} tries "
                        f"({type(err).__name__}: {err})"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def _require_conditional(self) -> None:
        protocol = url_scheme(self.url)
        if protocol not in WORKSPACE_STORE_SCHEMES:
            raise ConfigError(
                f"workspace {self.url}: conditional writes are implemented for s3://, gs:// and "
                f"az:// only, not {protocol}://"
            )

    def put(self, key: str, data: bytes) -> None:
        """Write `data` to `key` (replacing what is there)."""
        _uploaded.pop((self.url, key), None)
        self._retried(f"writing {key}", lambda: self.fs.pipe_file(self.path(key), data))

    def upload(self, key: str, source: Path, sha256: str | None = None) -> None:
        """Write the local file `source` to `key`, streamed from disk (a run's float32 vectors
        may be larger than memory); with `sha256`, the file's digest, remember in this process
        that `key` holds those bytes (see `uploaded`)."""
        _uploaded.pop((self.url, key), None)
        self._retried(f"writing {key}", lambda: self.fs.put_file(str(source), self.path(key)))
        if sha256 is not None:
            _uploaded[(self.url, key)] = sha256

    def uploaded(self, key: str) -> str | None:
        """The sha256 of the file this process last uploaded to `key`, None if it did not (a
        train flow shares a run's index with its Dask tasks before the run is published)."""
        return _uploaded.get((self.url, key))

    def download(self, key: str, target: Path) -> bool:
        """Copy `key` into the local file `target`, streamed to disk through a temporary file
        renamed at the end; False, and nothing written, when `key` does not exist."""
        try:
            with atomic_path(target) as tmp:
                self._retried(f"reading {key}", lambda: self.fs.get_file(self.path(key), str(tmp)))
        except Exception as err:
            if _is_missing(err):
                return False
            raise
        return True

    def _conditional(self, key: str, data: bytes, expected: str | None) -> str:
        self._require_conditional()
        protocol = url_scheme(self.url)
        try:
            return self._retried(
                f"writing {key}",
                lambda: write_if(self.fs, protocol, self.path(key), data, expected),
            )
        except (StoreUnavailable, ConfigError):
            raise
        except Exception as err:
            if not (is_conflict(err) or isinstance(err, FileExistsError)):
                raise
            now = self.get_versioned(key)
            if now is not None and now.data == data:  # a retry of a write that had landed
                return now.etag
            refused = "If-None-Match" if expected is None else "If-Match"
            raise StoreConflict(
                f"{self.url}/{key} was changed by another writer ({refused} refused)"
            ) from None

    def create(self, key: str, data: bytes) -> str:
        """Write `key` only if it does not exist (If-None-Match: *); its new ETag, or
        StoreConflict."""
        return self._conditional(key, data, None)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        """Write `key` only if it still has `etag` (If-Match); its new ETag, or StoreConflict."""
        return self._conditional(key, data, etag)

    def get(self, key: str) -> bytes | None:
        """The bytes of `key`, None when it does not exist."""
        try:
            return self._retried(f"reading {key}", lambda: self.fs.cat_file(self.path(key)))
        except Exception as err:
            if _is_missing(err):
                return None
            raise

    def etag(self, key: str) -> str | None:
        """The ETag of `key` as the store says now, None when it does not exist."""
        try:
            info = self._retried(
                f"reading {key}", lambda: self.fs.info(self.path(key), refresh=True)
            )
        except Exception as err:
            if _is_missing(err):
                return None
            raise
        return version(url_scheme(self.url), info)

    def get_versioned(self, key: str) -> Versioned | None:
        """The bytes of `key` with the ETag they belong to (its ETag read before and after the
        bytes, again until both agree); None when it does not exist."""
        for _ in range(self.retries + 1):
            before = self.etag(key)
            data = self.get(key) if before is not None else None
            if before is None or data is None:
                return None
            if self.etag(key) == before:
                return Versioned(data, before)
        raise StoreUnavailable(f"{self.url}/{key} kept changing while it was read")

    def delete(self, keys: list[str]) -> None:
        """Delete `keys` (in this order; those already gone are skipped)."""
        for key in keys:
            _uploaded.pop((self.url, key), None)
            try:
                self._retried(f"deleting {key}", lambda key=key: self.fs.rm_file(self.path(key)))
            except Exception as err:
                if not _is_missing(err):
                    raise

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursively), relative to the workspace, sorted."""
        root = self.path("")
        top = self.path(prefix.rstrip("/"))
        fs = self.fs
        fs.invalidate_cache(top)
        try:
            found = self._retried(f"listing {prefix}", lambda: fs.find(top))
        except Exception as err:
            if _is_missing(err):
                return []
            raise
        return sorted(p[len(root) + 1 :] for p in found)
