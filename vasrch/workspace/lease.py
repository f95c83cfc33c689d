"""One writer per workspace in object storage: a lease object taken with a conditional write.

The lease (lease.json at the workspace's root) names its owner and how long it lasts without a
heartbeat (`ttl_s`). Its holder rewrites it every ttl_s / 3 by compare-and-swap on its ETag. A
writer that finds it held watches its ETag on its own clock: only when the ETag has not changed
for a whole ttl_s (the holder stopped heartbeating: it died or lost the store) does it take the
lease, by compare-and-swap on that ETag, so clocks of different machines never have to agree and
a holder that still heartbeats never loses it. A holder whose heartbeat is refused, or that could
not heartbeat for ttl_s, has lost the lease: `Lease.check` then fails, and publication calls it
before it switches LATEST (which is itself a compare-and-swap).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

from vasrch.workspace.lock import WorkspaceBusy
from vasrch.workspace.store import StoreConflict, StoreUnavailable, Versioned, WorkspaceStore

LEASE_KEY = "lease.json"


class LeaseLost(WorkspaceBusy):
    """The holder could not keep its lease (another writer took it after heartbeats stopped)."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease object holds."""

    owner: str
    command: str
    host: str
    pid: int
    since: str
    ttl_s: float
    beat: int = 0
    released: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on {self.host}, since {self.since})"


def _decode(found: Versioned) -> LeaseRecord | None:
    """The record a lease object holds; None when it is not one (then it is taken over like a
    released lease)."""
    try:
        data: Any = json.loads(found.data)
        return LeaseRecord(**data)
    except (ValueError, TypeError):
        return None


class Lease:
    """A held lease: heartbeats in a daemon thread until `release`."""

    def __init__(self, store: WorkspaceStore, record: LeaseRecord, etag: str) -> None:
        self.store = store
        self.record = record
        self.etag = etag
        self.lost_because = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="vasrch-lease")
        self._thread.start()

    def _heartbeat(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(self.record.ttl_s / 3):
            beat = replace(self.record, beat=self.record.beat + 1)
            try:
                self.etag = self.store.replace(LEASE_KEY, beat.encode(), self.etag)
            except StoreConflict:
                self.lost_because = "another writer took it"
                return
            except StoreUnavailable as err:
                if time.monotonic() - last_beat >= self.record.ttl_s:
                    self.lost_because = f"no heartbeat reached the store for ttl_s ({err})"
                    return
                continue
            self.record = beat
            last_beat = time.monotonic()

    def check(self) -> None:
        """LeaseLost when the lease is no longer this writer's."""
        if self.lost_because:
            raise LeaseLost(f"{self.store.url}: the workspace lease was lost: {self.lost_because}")

    def release(self) -> None:
        """Stop heartbeating and mark the lease released (unless it was lost)."""
        self._stop.set()
        self._thread.join()
        if not self.lost_because:
            released = replace(self.record, released=True).encode()
            with contextlib.suppress(StoreConflict, StoreUnavailable):  # taken, or left to expire
                self.store.replace(LEASE_KEY, released, self.etag)


def _record(command: str, ttl_s: float) -> LeaseRecord:
    return LeaseRecord(
        owner=uuid.uuid4().hex,
        command=command,
        host=socket.gethostname(),
        pid=os.getpid(),
        since=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        ttl_s=ttl_s,
    )


def take_lease(store: WorkspaceStore, command: str, timeout_s: float, ttl_s: float = 60.0) -> Lease:
    """The workspace's lease, waiting up to `timeout_s` for a holder to release it or stop
    heartbeating; WorkspaceBusy naming the holder when it does not."""
    mine = _record(command, ttl_s)
    deadline = time.monotonic() + timeout_s
    watched: tuple[str, float] | None = None  # (ETag, when this writer first saw it)
    holder = "an unknown writer"
    while True:
        found = store.get_versioned(LEASE_KEY)
        try:
            if found is None:
                return Lease(store, mine, store.create(LEASE_KEY, mine.encode()))
            theirs = _decode(found)
            if watched is None or watched[0] != found.etag:
                watched = (found.etag, time.monotonic())
            stale = theirs is not None and time.monotonic() - watched[1] >= theirs.ttl_s
            if theirs is None or theirs.released or stale:
                return Lease(store, mine, store.replace(LEASE_KEY, mine.encode(), found.etag))
            holder = theirs.describe()
            poll_s = min(theirs.ttl_s / 4, 1.0)
        except StoreConflict:
            continue  # another writer moved first: look again
        if time.monotonic() + poll_s > deadline:
            raise WorkspaceBusy(
                f"workspace {store.url} is in use by {holder}; waited {timeout_s:g} s "
                "(runs.lock_timeout_s). Try again when it has finished"
            )
        time.sleep(poll_s)


@contextmanager
def workspace_lease(
    store: WorkspaceStore, command: str, timeout_s: float, ttl_s: float = 60.0
) -> Iterator[Lease]:
    """Hold the workspace's lease for the block (see take_lease), released at its end."""
    lease = take_lease(store, command, timeout_s, ttl_s)
    try:
        yield lease
    finally:
        lease.release()
