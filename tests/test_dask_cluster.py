"""The test and benchmark Dask cluster (tests/dask_cluster.py): a paused cluster's processes are
all stopped, and the cluster runs tasks again once resumed; a flow on it sees its workers'
threads as its task slots."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.dask_cluster import dask_cluster
from vasrch.config import RunnerConfig
from vasrch.orchestration.task_runners import prefect_api_url, task_slots, use_runner


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _states(groups: tuple[int, ...]) -> dict[int, str]:
    """The state letter (R, S, T...) of every process in the process groups `groups`."""
    states = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = _stat(entry)
        except OSError:  # ended meanwhile
            continue
        if int(stat[2]) in groups:
            states[int(entry)] = stat[0]
    return states


def _cpu_seconds(pids: list[int]) -> float:
    ticks = sum(int(_stat(pid)[11]) + int(_stat(pid)[12]) for pid in pids)
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning")
def test_a_paused_cluster_is_stopped_and_runs_tasks_once_resumed(tmp_path):
    from distributed import Client

    with dask_cluster(2, "http://127.0.0.1:9/api", tmp_path / "logs") as cluster:
        running = _states(cluster.process_groups)
        # the scheduler, and each worker's nanny and worker process (and its helpers)
        assert len(running) >= 5 and "T" not in running.values()
        with cluster.paused():
            time.sleep(0.5)  # a stop signal is delivered asynchronously
            stopped = _states(cluster.process_groups)
            before = _cpu_seconds(list(stopped))
            time.sleep(1.5)
            assert set(stopped.values()) == {"T"}
            assert _cpu_seconds(list(stopped)) == before
        assert "T" not in _states(cluster.process_groups).values()
        with Client(cluster.address, timeout=60) as client:
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
            assert len(client.scheduler_info()["workers"]) == 2


@flow
def _api_url() -> str:
    return prefect_api_url()


@flow
def _slots(runner: RunnerConfig) -> int:
    with use_runner(runner):
        return task_slots()


@pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning")
def test_task_slots_are_the_threads_of_the_cluster_workers(tmp_path):
    api = _api_url()
    with temporary_settings({PREFECT_API_URL: api}), dask_cluster(2, api, tmp_path) as cluster:
        assert _slots(RunnerConfig(type="dask", address=cluster.address)) == 2
    assert _slots(RunnerConfig(type="thread", max_workers=4)) == 1
