"""Dask workers that share no disk with the flow: a real `dask scheduler` and two `dask worker`
processes run as another user with folders of their own and no access to the test's folders;
catalog and workspace live on the S3 store (SeaweedFS). Train and a bulk job on that cluster
give what the same train gives on threads."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.configs import write_config
from tests.dask_cluster import dask_cluster
from tests.object_store import s3_environment, upload_folder
from tests.run_compare import assert_same_features, assert_same_neighbours
from vasrch.config import load_config
from vasrch.features.backbones import _BUILT, BackboneSpec, fingerprint
from vasrch.features.extraction import cache_dir_for
from vasrch.orchestration.task_runners import prefect_api_url
from vasrch.workspace.remote_runs import read_latest
from vasrch.workspace.store import WorkspaceStore

BATCH = 9  # no other test uses it: the backbone cache key below is this test's own


@flow
def _api_url() -> str:
    return prefect_api_url()


def _config(root: Path, prefix: str, name: str, runner: dict) -> Path:
    return write_config(
        root,
        {
            "catalog": {"path": f"{prefix}/catalog"},
            "workspace": f"{prefix}/{name}",
            "workspace_cache": str(root / f"cache-{name}"),
            "features": {"weights": "imagenet", "batch_size": BATCH, "shard_size": 8},
            "clustering": {"num_clusters": 8, "diagnostics": {"k_min": 2, "k_max": 8}},
            "search": {"probes": 2},
            "evaluation": {"sample": 16},
            "bulk": {"top_n": 5, "probes": 2, "chunk_rows": 10},
            "runner": runner,
        },
        name=f"{name}.yaml",
    )


def _download(store: WorkspaceStore, prefix: str, folder: Path) -> Path:
    """The store's files under `prefix`, copied into `folder` (to read them as local files)."""
    for key in store.keys(prefix):
        target = folder / key[len(prefix) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))
    return folder


# the workers may run the system's Python of the venv's version (tests/dask_cluster.py)
@pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning")
@pytest.mark.slow  # two trains and a bulk job, workers starting TensorFlow: about 2 minutes
def test_workers_sharing_no_disk_train_and_bulk_as_threads_do(
    tmp_path, object_store, bucket, demo_catalog
):
    from distributed import Client

    from vasrch.orchestration.flows.bulk import bulk_flow
    from vasrch.orchestration.flows.train import train_flow

    tmp_path.chmod(0o700)
    prefix = f"s3://{bucket}/{uuid.uuid4().hex[:10]}"
    upload_folder(object_store, demo_catalog, f"{prefix}/catalog")
    api = _api_url()
    with (
        s3_environment(object_store),
        temporary_settings({PREFECT_API_URL: api}),
        dask_cluster(2, api, tmp_path / "logs") as cluster,
    ):
        with Client(cluster.address) as client:  # the workers: nobody, the test's folder closed
            assert set(client.run(os.getuid).values()) == {65534}
            for access in (os.R_OK, os.X_OK):
                assert set(client.run(os.access, str(tmp_path), access).values()) == {False}

        runner = {"type": "dask", "address": cluster.address}
        on_dask = train_flow(str(_config(tmp_path, prefix, "dask", runner)))
        config = load_config(tmp_path / "dask.yaml")
        fp = fingerprint(BackboneSpec.from_config(config.features))
        # every photo embedded on the workers: the backbone was never built in this process
        assert not [key for key in _BUILT if key.startswith(f"{fp}:{BATCH}:")]
        assert on_dask.extract.new == 48 and on_dask.extract.rejected == 0
        job = bulk_flow(str(tmp_path / "dask.yaml"))
        on_threads = train_flow(str(_config(tmp_path, prefix, "thread", {"type": "thread"})))
    assert [key for key in _BUILT if key.startswith(f"{fp}:{BATCH}:")]

    dask_store = WorkspaceStore(f"{prefix}/dask", object_store.storage_options)
    thread_store = WorkspaceStore(f"{prefix}/thread", object_store.storage_options)
    assert read_latest(dask_store).run_id == on_dask.run_id
    features = cache_dir_for(Path("."), fp).as_posix()
    # the shards the workers wrote are on the store, and the flow gathered them
    on_store = _download(dask_store, features, tmp_path / "dask-features")
    assert sorted(p.name for p in on_store.iterdir()) == sorted(
        p.name for p in cache_dir_for(config.workspace, fp).iterdir()
    )
    thread_cache = cache_dir_for(load_config(tmp_path / "thread.yaml").workspace, fp)
    assert_same_features(thread_cache, on_store, images=48)

    run_bulk = f"runs/{on_dask.run_id}/bulk"
    dask_bulk = _download(dask_store, run_bulk, tmp_path / "dask-run-bulk")
    thread_bulk = _download(thread_store, f"runs/{on_threads.run_id}/bulk", tmp_path / "t-bulk")
    assert len(list(dask_bulk.glob("neighbours-*.parquet"))) > 1
    assert_same_neighbours(thread_bulk, dask_bulk, rows=48 * 5)
    clusters = ["image_id", "cluster"]
    assert pq.read_table(
        on_dask.run_dir / "index" / "assignments.parquet", columns=clusters
    ).equals(pq.read_table(on_threads.run_dir / "index" / "assignments.parquet", columns=clusters))

    # the bulk job on the saved run: its outputs published on the store, COMPLETE with them
    job_prefix = job.out_dir.relative_to(config.workspace).as_posix()
    published = _download(dask_store, job_prefix, tmp_path / "dask-job")
    assert (published / "COMPLETE").read_text() == f"run {on_dask.run_id}\n"
    assert (published / "duplicates.parquet").is_file()
    assert_same_neighbours(dask_bulk, published, rows=48 * 5)
