"""One writer per workspace on an object store: the lease (SeaweedFS, fake-gcs-server and Azurite
on loopback, short ttls)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.workspace_stores import ALL_STORES_SLOW_EMULATORS
from vasrch.workspace.lease import LEASE_KEY, LeaseLost, take_lease, workspace_lease
from vasrch.workspace.lock import WorkspaceBusy

TTL_S = 1.5


@ALL_STORES_SLOW_EMULATORS
def test_a_heartbeating_holder_keeps_the_lease_past_its_ttl(store):
    with workspace_lease(store, "train flow", timeout_s=1, ttl_s=TTL_S) as held:
        started = time.monotonic()
        with pytest.raises(WorkspaceBusy, match=r"in use by train flow \(pid"):
            take_lease(store, "nightly flow", timeout_s=3 * TTL_S, ttl_s=TTL_S)
        assert time.monotonic() - started >= 2 * TTL_S
        assert held.record.beat >= 3
        held.check()


@ALL_STORES_SLOW_EMULATORS
def test_a_released_lease_is_taken_at_once(store):
    with workspace_lease(store, "train flow", timeout_s=1, ttl_s=TTL_S):
        pass
    started = time.monotonic()
    with workspace_lease(store, "nightly flow", timeout_s=5, ttl_s=TTL_S) as second:
        assert time.monotonic() - started < TTL_S
        assert second.record.command == "nightly flow"


@ALL_STORES_SLOW_EMULATORS
def test_a_killed_holder_releases_the_lease_by_expiry(store):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from vasrch.workspace.store import WorkspaceStore
        from vasrch.workspace.lease import take_lease
        store = WorkspaceStore({store.url!r}, {dict(store.storage_options)!r})
        take_lease(store, "killed writer", timeout_s=5, ttl_s={TTL_S})
        print("held", flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().strip() == b"held"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    started = time.monotonic()
    with workspace_lease(store, "next writer", timeout_s=6 * TTL_S, ttl_s=TTL_S) as lease:
        waited = time.monotonic() - started
        assert TTL_S <= waited < 5 * TTL_S
        assert lease.record.command == "next writer"


@ALL_STORES_SLOW_EMULATORS
def test_a_holder_whose_lease_was_taken_knows_it(store):
    with workspace_lease(store, "train flow", timeout_s=1, ttl_s=TTL_S) as held:
        store.put(LEASE_KEY, b'{"owner": "someone else"}')
        deadline = time.monotonic() + 3 * TTL_S
        while not held.lost_because and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(LeaseLost, match="another writer took it"):
            held.check()
    assert store.get(LEASE_KEY) == b'{"owner": "someone else"}'
