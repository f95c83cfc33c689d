"""The Prefect task runner named by the config's `runner` section: threads or a Dask cluster.

Orchestration glue like cli.py and deploy.py: Prefect, prefect-dask and distributed are imported
only inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vasrch.config import Config, RunnerConfig
from vasrch.errors import ConfigError
from vasrch.workspace.mirror import store_of
from vasrch.workspace.store import WorkspaceStore

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

DASK_EXTRA_HINT = "pip install 'vasrch[dask]'"


def local_cluster_kwargs(runner: RunnerConfig) -> dict[str, Any]:
    """Keyword arguments of the temporary distributed.LocalCluster for `runner.n_workers`.

    One single-threaded process per worker: each process builds the backbone once and runs one
    chunk at a time, so two tasks never share a TensorFlow process. The dashboard takes a free
    port, so two clusters on one machine do not collide.
    """
    return {
        "n_workers": runner.n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
    }


def prefect_api_url() -> str:
    """The Prefect API this process reports to: PREFECT_API_URL, or else the temporary local
    server that Prefect starts (once per process) when none is configured."""
    from prefect import get_client

    return str(get_client(sync_client=True).api_url).rstrip("/")


def start_local_cluster(**kwargs: Any) -> Any:
    """A distributed.LocalCluster whose worker processes report to this process's Prefect API.

    Without PREFECT_API_URL in their environment, every worker would start a temporary Prefect
    server of its own on the same database: slow, racing for ports, and left running when Dask
    kills a worker at shutdown. DaskTaskRunner calls this inside the flow run, when the run's
    API is known.
    """
    from distributed import LocalCluster

    return LocalCluster(env={"PREFECT_API_URL": prefect_api_url()}, **kwargs)


def _dask_task_runner_class() -> Any:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as err:
        raise ConfigError(
            f"runner.type is dask but prefect-dask is not installed ({err}); "
            f"install it with: {DASK_EXTRA_HINT}"
        ) from None
    return DaskTaskRunner


def _require_prefect_server(address: str) -> None:
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise ConfigError(
            f"runner.address is {address!r} but PREFECT_API_URL is not set: Dask workers cannot "
            "report to the temporary Prefect API of this process. Start a server (prefect server "
            "start --host 0.0.0.0) and export PREFECT_API_URL=http://<server-host>:4200/api here "
            "and on every Dask worker machine; or remove runner.address to use a local cluster"
        )


def task_runner(runner: RunnerConfig) -> TaskRunner:
    """A fresh, unstarted task runner for `runner`: ThreadPoolTaskRunner(max_workers), or a
    DaskTaskRunner on the scheduler at `address` or on a local cluster of `n_workers`
    processes (started when the first task is submitted, closed with the runner)."""
    if runner.type == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=runner.max_workers)
    dask_task_runner = _dask_task_runner_class()
    if runner.address:
        _require_prefect_server(runner.address)
        return dask_task_runner(address=runner.address)
    return dask_task_runner(
        cluster_class=start_local_cluster, cluster_kwargs=local_cluster_kwargs(runner)
    )


@contextmanager
def use_runner(runner: RunnerConfig) -> Iterator[TaskRunner]:
    """Inside a flow run: `task.map`/`task.submit` in this block run on the runner that
    `runner` names; direct task calls still run in the flow's own process.

    The runner is chosen from the config the flow has loaded, so it also applies to flow runs
    that a served deployment starts from the flow's entrypoint. Resolve the futures inside the
    block: leaving it shuts the runner (and a local Dask cluster) down.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("use_runner() works inside a flow run only; call it from a flow")
    with task_runner(runner) as started, context.model_copy(update={"task_runner": started}):
        yield started


def task_slots() -> int:
    """How many tasks the flow run's task runner runs at once, for work split evenly over
    them: the threads of its Dask cluster's workers (connecting to the cluster), else 1
    (threads on this machine, which share its cores)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    client = getattr(context.task_runner, "client", None) if context is not None else None
    if client is None:
        return 1
    return max(1, sum(client.nthreads().values()))


def task_store(cfg: Config) -> WorkspaceStore | None:
    """The workspace's store when mapped tasks go through it: on Dask with the workspace in
    object storage, whose workers share no disk with the flow (they read and write the store,
    the flow gathers); None when tasks use the flow's disk (threads, or a local workspace)."""
    return store_of(cfg) if cfg.runner.type == "dask" else None
