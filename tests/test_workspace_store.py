"""A workspace in object storage (SeaweedFS on loopback; fake-gcs-server and Azurite too where
marked ALL_STORES): conditional writes, retries through a fault-injecting proxy, atomic
publication of runs and verified fetches."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.store_proxy import Fault, fault_proxy
from tests.workspace_stores import ALL_STORES, make_run, new_store
from vasrch.layout import RunLayout
from vasrch.workspace import runs
from vasrch.workspace.remote_runs import (
    LATEST_KEY,
    fetch_run,
    follow_latest,
    publish_run,
    read_latest,
    run_key,
)
from vasrch.workspace.store import StoreConflict, StoreUnavailable


@ALL_STORES
def test_create_once_and_compare_and_swap(store):
    first = store.create("runs/LATEST", b"a\n")
    with pytest.raises(StoreConflict):
        store.create("runs/LATEST", b"b\n")
    second = store.replace("runs/LATEST", b"c\n", first)
    with pytest.raises(StoreConflict):
        store.replace("runs/LATEST", b"d\n", first)
    found = store.get_versioned("runs/LATEST")
    assert (found.data, found.etag) == (b"c\n", second)
    assert store.get("runs/none") is None and store.etag("runs/none") is None


@ALL_STORES
def test_keys_lists_recursively_relative_to_the_workspace(store):
    for key in ("features/fp/part-1.parquet", "features/fp/part-2.parquet", "runs/LATEST"):
        store.put(key, b"x")
    assert store.keys("features") == ["features/fp/part-1.parquet", "features/fp/part-2.parquet"]
    assert store.keys("nothing") == []


def test_throttling_and_5xx_are_retried_then_reported(object_store, bucket):
    with fault_proxy(object_store.endpoint) as proxy:
        store = new_store(proxy.endpoint, bucket, retries=3)
        proxy.faults = [Fault("PUT", "/a", 503, times=2), Fault("PUT", "/a", 500, times=1)]
        store.put("a", b"1")
        assert proxy.injected == 3 and store.get("a") == b"1"
        proxy.faults = [Fault("GET", "/a", 503, times=1000)]
        with pytest.raises(StoreUnavailable, match="after 4 tries"):
            store.get("a")


@ALL_STORES
def test_two_concurrent_publishers_exactly_one_wins(store, tmp_path):
    old = make_run(tmp_path / "w0", b"old")
    publish_run(store, old, read_latest(store))
    seen = read_latest(store)
    folders = [make_run(tmp_path / f"w{i}", f"run {i}".encode()) for i in (1, 2)]
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def publish(folder: Path) -> None:
        barrier.wait()
        try:
            publish_run(store, folder, seen)
            outcomes[folder.name] = "won"
        except StoreConflict:
            outcomes[folder.name] = "lost"

    threads = [threading.Thread(target=publish, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes.values()) == ["lost", "won"]
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    assert read_latest(store).run_id == winner


def test_a_failed_upload_midway_leaves_latest_on_the_old_run(object_store, bucket, tmp_path):
    with fault_proxy(object_store.endpoint) as proxy:
        store = new_store(proxy.endpoint, bucket, retries=1)
        old = make_run(tmp_path / "w", b"old")
        publish_run(store, old, read_latest(store))
        new = make_run(tmp_path / "w", b"new")
        proxy.faults = [Fault("PUT", "/index/vectors.npy", 503, times=1000)]
        with pytest.raises(StoreUnavailable):
            publish_run(store, new, read_latest(store))
        assert read_latest(store).run_id == old.name
        assert store.get(run_key(new.name, "manifest.json")) is None
        with pytest.raises(runs.RunError, match="incomplete"):
            fetch_run(store, new.name, tmp_path / "reader")
        assert not (tmp_path / "reader" / "runs" / new.name).exists()


@ALL_STORES
def test_fetch_verifies_every_file_and_follows_latest(store, tmp_path):
    published = make_run(tmp_path / "writer", b"served")
    publish_run(store, published, read_latest(store))
    reader = tmp_path / "reader"
    assert follow_latest(store, reader) == published.name
    assert runs.latest_run_id(reader) == published.name
    fetched = RunLayout(reader / "runs" / published.name)
    assert (fetched.root / "index" / "vectors.npy").read_bytes() == b"served"
    runs.read_manifest(fetched.root, verify=True)

    tampered = make_run(tmp_path / "writer", b"second")
    publish_run(store, tampered, read_latest(store))
    store.put(run_key(tampered.name, "catalog.parquet"), b"changed on the store")
    with pytest.raises(runs.RunError, match="does not match its sha256"):
        follow_latest(store, reader)
    assert runs.latest_run_id(reader) == published.name
    assert not (reader / "runs" / tampered.name).exists()


@ALL_STORES
def test_latest_naming_no_run_id_is_refused(store):
    store.put(LATEST_KEY, b"../elsewhere\n")
    with pytest.raises(runs.RunError, match="not a run id"):
        read_latest(store)
