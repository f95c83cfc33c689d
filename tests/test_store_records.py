"""The rest of a workspace in object storage (SeaweedFS on loopback): the hidden-products record
changed by compare-and-swap from several machines at once, runs pruned on the store (manifest
first, never LATEST's), and a read-only CLI that gives up on an unreachable store in seconds."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.store_proxy import Fault, fault_proxy
from tests.workspace_stores import make_run, new_store, options
from vasrch.cli.options import QUICK_READS, _follow
from vasrch.hashing import sha256_file
from vasrch.layout import RunLayout
from vasrch.workspace import runs
from vasrch.workspace.hidden import (
    HIDDEN_KEY,
    HiddenRecordError,
    hide,
    pull_hidden,
    read_hidden,
    settle,
    unhide,
)
from vasrch.workspace.remote_prune import prune_store_runs, store_runs
from vasrch.workspace.remote_runs import (
    MANIFEST,
    fetch_file,
    fetch_run,
    follow_latest,
    publish_run,
    read_latest,
    run_key,
    switch_latest,
    upload_run,
)
from vasrch.workspace.runs import RunError
from vasrch.workspace.store import StoreUnavailable, WorkspaceStore
from vasrch.workspace.store_folders import StoreFolder

WRITERS = 3
IDS_EACH = 6


def test_machines_hiding_at_once_lose_no_change(store, tmp_path):
    def machine(n: int) -> None:
        for i in range(IDS_EACH):
            hide(tmp_path / f"cache-{n}", [f"p{n}-{i}"], by=f"machine {n}", store=store)

    threads = [threading.Thread(target=machine, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everyone = {f"p{n}-{i}" for n in range(WRITERS) for i in range(IDS_EACH)}
    reader = tmp_path / "reader"
    pull_hidden(store, reader)
    assert read_hidden(reader).ids == everyone
    assert read_hidden(reader).entries["p1-0"]["by"] == "machine 1"

    assert unhide(tmp_path / "cache-0", ["p0-0", "nope"], store) == ["p0-0"]
    assert settle(tmp_path / "cache-1", everyone - {"p2-5"}, store) == ["p2-5"]
    assert read_hidden(tmp_path / "cache-1").ids == everyone - {"p0-0", "p2-5"}
    follow_latest(store, reader)  # what the CLI and the query service call: no run yet
    assert read_hidden(reader).ids == everyone - {"p0-0", "p2-5"}


def test_a_damaged_record_on_the_store_is_refused_and_the_cache_kept(store, tmp_path):
    hide(tmp_path, ["a"], by="test", store=store)
    store.put(HIDDEN_KEY, b"not json")
    with pytest.raises(HiddenRecordError, match=HIDDEN_KEY):
        pull_hidden(store, tmp_path)
    with pytest.raises(HiddenRecordError):
        hide(tmp_path, ["b"], by="test", store=store)
    assert read_hidden(tmp_path).ids == {"a"}


def _published(store, folder: Path, count: int) -> list[str]:
    made = []
    for i in range(count):
        made.append(publish_run(store, make_run(folder, f"run {i}".encode()), read_latest(store)))
    return made


def test_prune_on_the_store_keeps_latest_and_what_is_being_published(store, tmp_path):
    leftover = make_run(tmp_path, b"failed publication")  # files without a manifest, older
    for name in ("index/vectors.npy", "catalog.parquet"):
        store.upload(run_key(leftover.name, name), leftover / name)
    old, middle, newest = _published(store, tmp_path, 3)
    switch_latest(store, old, read_latest(store))  # LATEST rolled back to the oldest run
    in_flight = make_run(tmp_path, b"being published")
    store.upload(run_key(in_flight.name, "catalog.parquet"), in_flight / "catalog.parquet")

    assert prune_store_runs(store, keep_last=1) == [middle, leftover.name]
    assert set(store_runs(store)) == {old, newest, in_flight.name}
    assert read_latest(store).run_id == old
    fetched = fetch_run(store, old, tmp_path / "reader")
    runs.read_manifest(fetched, verify=True)


def test_an_interrupted_prune_leaves_no_run_to_read_and_the_next_finishes_it(
    object_store, bucket, tmp_path
):
    with fault_proxy(object_store.endpoint) as proxy:
        store = new_store(proxy.endpoint, bucket, retries=1)
        doomed, latest = _published(store, tmp_path, 2)
        proxy.faults.append(Fault("DELETE", "vectors.npy", 500, times=10))
        with pytest.raises(StoreUnavailable):
            prune_store_runs(store, keep_last=1)
        left = store_runs(store)[doomed]
        assert run_key(doomed, MANIFEST) not in left and left  # manifest went first
        with pytest.raises(RunError, match="incomplete"):
            fetch_run(store, doomed, tmp_path / "reader")
        proxy.faults.clear()
        assert prune_store_runs(store, keep_last=1) == [doomed]
        assert set(store_runs(store)) == {latest}


def test_upload_run_is_what_prune_lists_as_complete(store, tmp_path):
    run = make_run(tmp_path)
    upload_run(store, run)
    keys = store_runs(store)[run.name]
    assert run_key(run.name, RunLayout(run).manifest.name) in keys and len(keys) == 3


@pytest.fixture
def silent_endpoint():
    """An endpoint that accepts connections and never answers (a hung store or proxy)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_cli_with_a_cached_latest_gives_up_on_a_hung_store_in_seconds(
    store, tmp_path, silent_endpoint, capsys
):
    run = make_run(tmp_path / "writer")
    publish_run(store, run, read_latest(store))
    cache = tmp_path / "cache"
    follow_latest(store, cache)
    hung = WorkspaceStore(store.url, options(silent_endpoint))

    start = time.monotonic()
    _follow(hung, cache, None)
    took = time.monotonic() - start
    bound = (QUICK_READS["retries"] + 1) * QUICK_READS["read_timeout_s"] + 0.2
    assert took < bound + 3, f"{took:.1f} s against a bound of {bound:.1f} s + client set-up"
    assert "warning: using the cached runs in" in capsys.readouterr().err
    assert runs.latest_run_id(cache) == run.name


def test_publishing_sends_only_the_files_this_process_has_not_already_sent(store, tmp_path):
    """A train on Dask shares the staged run's index with its tasks (the run's index folder on
    the store) before the run is published, which sent the whole index a second time."""
    run = make_run(tmp_path)
    key = run_key(run.name, "index/vectors.npy")
    shared = StoreFolder.mirroring(store, tmp_path, run / "index").upload_files(run / "index")
    assert store.uploaded(key) == shared["vectors.npy"]
    store.fs.pipe_file(store.path(key), b"stand-in")  # behind the process's back: seen if re-sent
    upload_run(store, run)
    assert store.get(key) == b"stand-in"
    assert store.get(run_key(run.name, "catalog.parquet")) == b"catalog vectors"
    store.put(key, b"other")  # a write through the store forgets what was sent there
    assert store.uploaded(key) is None
    upload_run(store, run)
    assert store.get(key) == b"vectors"


def test_files_travel_streamed_and_a_bad_fetch_leaves_nothing(store, tmp_path):
    """Run files went through memory whole (a 1M-photo run's float32 vectors are 5 GB); a file
    larger than s3fs's 50 MB part now goes up in parts and comes down to disk."""
    big = tmp_path / "big.npy"
    big.write_bytes(os.urandom(60 * 2**20))
    digest = sha256_file(big)
    store.upload("runs/x/big.npy", big, digest)
    target = tmp_path / "copy" / "big.npy"
    fetch_file(store, "runs/x/big.npy", target, digest)
    assert sha256_file(target) == digest
    target.unlink()
    with pytest.raises(RunError, match="does not match its sha256"):
        fetch_file(store, "runs/x/big.npy", target, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(RunError, match="is missing"):
        fetch_file(store, "runs/x/none.npy", target, digest)
    assert list(target.parent.iterdir()) == []
