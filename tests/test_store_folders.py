"""Folders of a workspace's store that tasks on other machines write and read (SeaweedFS on
loopback): written through a temporary folder, gathered by the flow, read back verified."""

from __future__ import annotations

import hashlib
import pickle

import pytest

from vasrch.workspace.runs import RunError
from vasrch.workspace.store_folders import StoreFiles, StoreFolder, writing_into


def test_a_store_travels_to_a_worker_without_its_client(store):
    assert store.get("nothing") is None  # the client is made ...
    assert "fs" in store.__dict__
    copy = pickle.loads(pickle.dumps(store))
    assert "fs" not in copy.__dict__  # ... and stays behind
    assert copy == store
    copy.put("sent", b"from a worker")
    assert store.get("sent") == b"from a worker"


def test_a_task_writes_through_a_temporary_folder_and_the_flow_gathers(store, tmp_path):
    folder = StoreFolder(store, "features/fp")
    with writing_into(folder) as local:
        (local / "part-1.parquet").write_bytes(b"one")
        (local / ".part-2.parquet.tmp").write_bytes(b"half")  # a temporary file stays behind
        written = local
    assert not written.exists()
    assert folder.names() == ["part-1.parquet"]
    with pytest.raises(ValueError), writing_into(folder) as local:
        (local / "part-3.parquet").write_bytes(b"failed task")
        raise ValueError
    assert folder.names() == ["part-1.parquet"]  # a failed block uploads nothing

    cache = tmp_path / "cache"
    (cache / "part-0.parquet").parent.mkdir()
    (cache / "part-0.parquet").write_bytes(b"zero")
    assert folder.gather(cache) == 1
    assert folder.gather(cache) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["part-0.parquet", "part-1.parquet"]
    assert (cache / "part-1.parquet").read_bytes() == b"one"

    assert writing_into(str(cache)).__enter__() == cache  # a local folder is used as it is


def test_files_are_copied_once_per_process_and_checked(store, tmp_path):
    source = tmp_path / "index"
    (source / "sub").mkdir(parents=True)
    (source / "vectors.npy").write_bytes(b"vectors")
    (source / "sub" / "codes.npy").write_bytes(b"codes")
    folder = StoreFolder(store, "runs/r1/index")
    sent = folder.upload_files(source)
    assert sent == {
        "sub/codes.npy": hashlib.sha256(b"codes").hexdigest(),
        "vectors.npy": hashlib.sha256(b"vectors").hexdigest(),
    }
    files = StoreFiles.of(folder, sent)
    copy = files.local_copy()
    assert (copy / "sub" / "codes.npy").read_bytes() == b"codes"
    assert pickle.loads(pickle.dumps(files)).local_copy() == copy

    store.put(folder.key("vectors.npy"), b"changed")
    changed = StoreFiles.of(
        StoreFolder(store, "runs/r1/index"), {"vectors.npy": sent["sub/codes.npy"]}
    )
    with pytest.raises(RunError, match="does not match its sha256"):
        changed.local_copy()
    with pytest.raises(RunError, match="outside"):
        StoreFiles.of(folder, {"../escape": sent["vectors.npy"]}).local_copy()
