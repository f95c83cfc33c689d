"""Extraction fed by the scan: the photos a scan downloads (a bucket's new objects, a feed's
new URLs) are embedded as they arrive, so each is downloaded once.

The scan must download a new remote photo to hash it (the feature cache is keyed by content);
`StreamedExtraction.offer` is its `on_bytes`. A photo whose sha256 the cache already holds (or
rejected, or that was offered before) is dropped; the others wait in a queue of at most
`capacity` photos (the scan's downloads wait while it is full) for one thread that decodes,
embeds and writes them in shards of `shard_size`, as extract_chunk does. Nothing reaches the
disk but the shards. Whatever the stream did not embed (a photo the record already knew, a
failure) is left to the ordinary chunks: plan_chunks finds it missing from the cache.
`waited_s` counts the seconds that thread spent waiting for the next download: the time the
downloads, not the model, set the pace.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from vasrch.catalog.images import DEFAULT_MAX_PIXELS, Rejection
from vasrch.features.extraction import (
    ChunkResult,
    Item,
    ProgressFn,
    cached_hashes,
    extract_items,
)

if TYPE_CHECKING:
    from vasrch.features.backbones import Backbone

_POLL_S = 0.2


class StreamedExtraction:
    """A consumer of the scan's downloads (see the module); use it as a context manager and
    read `results` and `waited_s` after it closes."""

    def __init__(
        self,
        backbone: Backbone,
        cache_dir: Path,
        shard_size: int,
        decode_workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        on_batch: ProgressFn | None = None,
        capacity: int = 64,
    ) -> None:
        self.results: list[ChunkResult] = []
        self.waited_s = 0.0
        self._backbone = backbone
        self._cache_dir = Path(cache_dir)
        self._shard_size = max(1, shard_size)
        self._decode = (decode_workers, max_pixels, on_batch)
        self._queue: queue.Queue[tuple[str, str, str, bytes] | None] = queue.Queue(capacity)
        self._bytes: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._skip: set[str] | None = None  # read from the cache at the first offer
        self._thread: threading.Thread | None = None
        self._ended = False
        self._error: BaseException | None = None

    def offer(self, image_id: str, path: str, sha256: str, data: bytes) -> None:
        """Queue a downloaded photo for embedding unless the cache has (or rejected) its bytes;
        waits while the queue is full."""
        with self._lock:
            if self._skip is None:
                done, rejected = cached_hashes(self._cache_dir)
                self._skip = done | rejected
                self._thread = threading.Thread(
                    target=self._run, name="vasrch-streamed-extraction", daemon=True
                )
                self._thread.start()
            if sha256 in self._skip:
                return
            self._skip.add(sha256)
        self._put((image_id, path, sha256, data))

    def _put(self, entry: tuple[str, str, str, bytes] | None) -> None:
        while self._error is None:
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _shard_items(self) -> Iterator[Item]:
        """The next photos from the queue, at most one shard's; ends the stream at its end."""
        for _ in range(self._shard_size):
            start = time.perf_counter()
            entry = self._queue.get()
            self.waited_s += time.perf_counter() - start
            if entry is None:
                self._ended = True
                return
            image_id, path, sha256, data = entry
            self._bytes[sha256] = data
            yield image_id, path, sha256

    def _take(self, path: str, sha256: str) -> bytes | Rejection:
        return self._bytes.pop(sha256)

    def _run(self) -> None:
        decode_workers, max_pixels, on_batch = self._decode
        try:
            while not self._ended:
                result = extract_items(
                    self._shard_items(),
                    self._take,
                    self._backbone,
                    self._cache_dir,
                    decode_workers,
                    max_pixels,
                    on_batch,
                )
                if result.extracted or result.rejected:
                    self.results.append(result)
        except BaseException as err:  # handed to close(), which raises it in the caller
            self._error = err

    def close(self) -> None:
        """End the stream and wait for the last shard; raises what stopped the consumer."""
        if self._thread is None:
            return
        self._put(None)
        self._thread.join()
        self._bytes.clear()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> StreamedExtraction:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the scan's own error is the one to report
            self.close()
