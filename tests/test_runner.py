"""Task runners from the config: threads, a local Dask cluster of worker processes, a scheduler
address; the train flow on Dask writes the same shards and neighbours as on threads."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow, task
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.configs import write_config
from tests.run_compare import assert_same_features, assert_same_neighbours
from vasrch.catalog.scan import scan_catalog
from vasrch.config import ConfigError, FeaturesConfig, RunnerConfig, load_config
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.features.extraction import ChunkResult, cache_dir_for, plan_chunks
from vasrch.orchestration.task_runners import (
    DASK_EXTRA_HINT,
    local_cluster_kwargs,
    prefect_api_url,
    start_local_cluster,
    task_runner,
    use_runner,
)

_active = {"now": 0, "peak": 0}
_lock = threading.Lock()


@task
def _occupy(seconds: float) -> None:
    with _lock:
        _active["now"] += 1
        _active["peak"] = max(_active["peak"], _active["now"])
    time.sleep(seconds)
    with _lock:
        _active["now"] -= 1


@flow
def _concurrency_flow(max_workers: int) -> None:
    with use_runner(RunnerConfig(type="thread", max_workers=max_workers)):
        _occupy.map([0.3] * 6).result()


@task
def _whereami(i: int) -> tuple[int, str | None]:
    return os.getpid(), os.environ.get("PREFECT_API_URL")


@flow
def _probe_flow(n_workers: int) -> tuple[str, list[tuple[int, str | None]]]:
    with use_runner(RunnerConfig(type="dask", n_workers=n_workers)):
        return prefect_api_url(), _whereami.map(range(6)).result()


@pytest.mark.parametrize("max_workers", [1, 2])
def test_thread_runner_runs_at_most_max_workers_tasks_at_once(max_workers):
    _active["peak"] = 0
    _concurrency_flow(max_workers)
    assert _active["peak"] == max_workers


def test_dask_runner_starts_a_local_cluster_of_single_threaded_processes():
    from prefect_dask import DaskTaskRunner

    runner = task_runner(RunnerConfig(type="dask", n_workers=3))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None
    assert runner.cluster_class is start_local_cluster
    assert runner.cluster_kwargs == local_cluster_kwargs(RunnerConfig(type="dask", n_workers=3))
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["processes"] is True


def test_dask_address_needs_a_prefect_server_the_workers_can_reach():
    cfg = RunnerConfig(type="dask", address="tcp://10.1.2.3:8786")
    with pytest.raises(ConfigError, match="PREFECT_API_URL is not set"):
        task_runner(cfg)
    with temporary_settings({PREFECT_API_URL: "http://10.1.2.4:4200/api"}):
        runner = task_runner(cfg)
    assert runner.address == "tcp://10.1.2.3:8786"
    assert runner.cluster_kwargs == {}


def test_missing_prefect_dask_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # makes `import prefect_dask` fail
    with pytest.raises(ConfigError, match=r"prefect-dask is not installed") as err:
        task_runner(RunnerConfig(type="dask"))
    assert DASK_EXTRA_HINT in str(err.value)
    assert task_runner(RunnerConfig(type="thread")) is not None


def test_use_runner_outside_a_flow_is_an_error():
    with pytest.raises(RuntimeError, match="inside a flow run"), use_runner(RunnerConfig()):
        pass


def test_task_arguments_survive_pickling(demo_catalog):
    """What Dask ships to workers: chunk frames, the backbone spec, the features config, the
    chunk result, cluster-id lists and str paths."""
    catalog = scan_catalog(demo_catalog).table
    features = FeaturesConfig(shard_size=8)
    chunks = plan_chunks(catalog, demo_catalog / "no-cache-here", features.shard_size)
    assert len(chunks) == 6
    for before, after in zip(chunks, pickle.loads(pickle.dumps(chunks)), strict=True):
        pd.testing.assert_frame_equal(after, before)
    spec = BackboneSpec.from_config(features)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert fingerprint(pickle.loads(pickle.dumps(spec))) == fingerprint(spec)
    assert pickle.loads(pickle.dumps(features)) == features
    result = ChunkResult(8, 0, "part-0123.parquet", 1.5)
    assert pickle.loads(pickle.dumps(result)) == result
    assert pickle.loads(pickle.dumps([[0, 3], [7]])) == [[0, 3], [7]]


def test_local_cluster_workers_are_other_processes_reporting_to_the_flows_api():
    api, seen = _probe_flow(2)
    assert api.startswith("http")
    assert len(seen) == 6
    assert all(pid != os.getpid() for pid, _ in seen)
    assert {url for _, url in seen} == {api}  # no worker started a Prefect server of its own


def _train(root: Path, catalog: Path, runner: RunnerConfig) -> tuple[Path, Path]:
    """Train in its own workspace under `root`; (feature cache folder, run folder)."""
    from vasrch.orchestration.flows.train import train_flow

    data = {
        "catalog": {"path": str(catalog)},
        "workspace": str(root / "workspace"),
        # batch size 7 is used by no other test: the backbone cache key below is this test's
        "features": {"weights": "imagenet", "batch_size": 7, "shard_size": 8},
        "clustering": {"num_clusters": 8, "diagnostics": {"k_min": 2, "k_max": 8}},
        "search": {"probes": 2},
        "evaluation": {"sample": 16},
        "bulk": {"top_n": 5, "probes": 2, "chunk_rows": 10},
        "runner": runner.model_dump(),
    }
    path = write_config(root, data)
    cfg = load_config(path)
    result = train_flow.with_options(task_runner=task_runner(cfg.runner))(str(path))
    assert result.extract.new == 48 and result.extract.rejected == 0
    fp = fingerprint(BackboneSpec.from_config(cfg.features))
    return cache_dir_for(cfg.workspace, fp), result.run_dir


@pytest.mark.slow  # long: run with -m slow
def test_dask_cluster_gives_the_same_shards_and_neighbours_as_threads(tmp_path, demo_catalog):
    from vasrch.features.backbones import _BUILT

    dask = RunnerConfig(type="dask", n_workers=2)
    dask_cache, dask_run = _train(tmp_path / "dask", demo_catalog, dask)
    fp = dask_cache.name
    # the backbone was built in the Dask workers, never in this process ...
    assert not [key for key in _BUILT if key.startswith(f"{fp}:7:")]
    thread_cache, thread_run = _train(tmp_path / "thread", demo_catalog, RunnerConfig())
    # ... which the thread runner does
    assert [key for key in _BUILT if key.startswith(f"{fp}:7:")]

    assert_same_features(thread_cache, dask_cache, images=48)
    assert len(list((thread_run / "bulk").glob("neighbours-*.parquet"))) > 1
    assert_same_neighbours(thread_run / "bulk", dask_run / "bulk", rows=48 * 5)
