"""The deployments (train, nightly, refresh, bulk, query, hide-products) and serving them all
from one process.

Prefect is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vasrch.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from vasrch.config import Config
    from vasrch.service.background import BackgroundService

TAGS = ["vasrch"]
DEFAULT_POLL_S = 1.0  # how often `vasrch serve` asks the server for runs to start


def api_url() -> str:
    """The Prefect API that deployments register with; a clear error when none is set."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set: start a server (PREFECT_SERVER_API_PORT=4200 prefect "
            "server start) and export PREFECT_API_URL=http://127.0.0.1:4200/api, or point it at "
            "your Prefect server, so the deployments can be reached from its UI"
        )
    return url


def build_deployments(config_path: str) -> list[RunnerDeployment]:
    """The six deployments, each defaulting to `config_path` (made absolute); nightly gets the
    config's nightly.cron in nightly.timezone, refresh an interval of refresh.interval_minutes
    (none: no schedule). Parameters keep the flows' type hints and docstring descriptions, so
    the Prefect UI shows a described form. The writers (train, nightly, refresh, bulk) run one
    at a time (concurrency limit 1; the workspace lock backs this up for runs started
    elsewhere); query and hide-products runs do not write runs and may overlap."""
    from prefect.schedules import Cron, Interval
    from prefect.types.entrypoint import EntrypointType

    from vasrch.config import load_config
    from vasrch.orchestration.flows.bulk import bulk_flow
    from vasrch.orchestration.flows.nightly import nightly_flow
    from vasrch.orchestration.flows.products import hide_products_flow
    from vasrch.orchestration.flows.query import query_flow
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow

    path = str(Path(config_path).resolve())
    cfg = load_config(path)
    nightly, minutes = cfg.nightly, cfg.refresh.interval_minutes
    common = {
        "parameters": {"config_path": path},
        "tags": TAGS,
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    writer = {**common, "concurrency_limit": 1}
    return [
        train_flow.to_deployment("train", **writer),
        nightly_flow.to_deployment(
            "nightly", schedules=[Cron(nightly.cron, timezone=nightly.timezone)], **writer
        ),
        refresh_flow.to_deployment(
            "refresh", schedules=[Interval(minutes * 60)] if minutes else [], **writer
        ),
        bulk_flow.to_deployment("bulk", **writer),
        query_flow.to_deployment("query", **common),
        hide_products_flow.to_deployment("hide-products", **common),
    ]


def serve_deployments(
    config_path: str,
    limit: int | None = None,
    files_host: str = "127.0.0.1",
    files_port: int = 8766,
    poll_s: float = DEFAULT_POLL_S,
    query_port: int | None = None,
    allow_public: bool = False,
) -> None:
    """Register the deployments with the server at PREFECT_API_URL and run their flow runs
    (started from the UI, the API or the nightly schedule) from this process until stopped;
    `limit` caps concurrent runs (None: no cap) and the server is asked for new runs every
    `poll_s` seconds. The workspace (and the catalog images its pages link to) is served
    read-only on files_host:files_port so the artifacts' links (reports, plots, pages) open in
    a browser; beyond loopback it asks for VASRCH_TOKEN, and refuses to start without one
    unless `allow_public`. With a `query_port` (0: any free one), a warm query service for the
    workspace listens there on loopback once it has a run, and query runs send it their images.
    Stopping leaves the schedules active: the nightly runs again once a server is back."""
    from prefect import serve

    from vasrch.config import load_config
    from vasrch.pages.file_server import FILES_URL_ENV, start_file_server
    from vasrch.service.settings import TOKEN_ENV

    if poll_s <= 0:
        raise UsageError(f"the polling interval must be positive, got {poll_s} s")
    api_url()
    cfg = load_config(config_path)
    try:
        files = start_file_server(
            cfg.workspace,
            files_host,
            files_port,
            os.environ.get(TOKEN_ENV),
            allow_public,
            catalog=cfg.catalog.path,
        )
    except OSError as err:
        raise UsageError(
            f"cannot serve the workspace files on {files_host}:{files_port}: "
            f"{err.strerror or err}; choose another --files-port (0: any free one), or stop "
            "what is using it"
        ) from None
    print(f"vasrch: workspace files (the UI's links) at {os.environ[FILES_URL_ENV]}", flush=True)
    service = None if query_port is None else _warm_service(cfg, query_port)
    try:
        serve(
            *build_deployments(config_path),
            limit=limit,
            pause_on_shutdown=False,
            query_seconds=poll_s,
        )
    finally:
        if service is not None:
            service.stop()
        files.shutdown()


def _warm_service(cfg: Config, port: int) -> BackgroundService:
    """The workspace's query service on 127.0.0.1:`port`, in a thread of this process (it
    starts once the workspace has a run); its log lines go to stderr."""
    import logging

    from vasrch.service.background import BackgroundService
    from vasrch.service.settings import TOKEN_ENV, ServiceSettings

    logger = logging.getLogger("vasrch.server")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler())
    settings = ServiceSettings(
        workspace=cfg.workspace,
        port=port,
        port_option="--query-port",
        search=cfg.search,
        token=os.environ.get(TOKEN_ENV),
        access_log=False,
    )
    service = BackgroundService(settings)
    service.start()
    return service
