"""Starting the service: in a thread of this process (tests, embedding), or as
`vasrch query-server` with one or several worker processes."""

from __future__ import annotations

import logging
import logging.config
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from vasrch.errors import UsageError
from vasrch.features.backbones import limit_model_threads
from vasrch.service.app import create_app
from vasrch.service.holder import RunHolder
from vasrch.service.memory import keep_large_blocks_mapped
from vasrch.service.metrics import MULTIPROCESS_ENV
from vasrch.service.protocol import JSONErrorH11Protocol
from vasrch.service.record import advertise, check_unserved, client_url
from vasrch.service.settings import ServiceSettings
from vasrch.service.stopping import Stopped, stopped_by_signals
from vasrch.workspace.runs import resolve_run

log = logging.getLogger("vasrch.server")

SETTINGS_ENV = "VASRCH_SERVICE_SETTINGS"
# Seconds a worker process may take to answer the supervisor's ping (it loads TensorFlow).
WORKER_HEALTHCHECK_S = 60


def logging_config() -> dict[str, Any]:
    """Log lines to stderr at INFO: the service's (`vasrch.*`, access lines included) and
    uvicorn's own, with the process id (workers share the output)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "vasrch": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def build_app(settings: ServiceSettings) -> tuple[FastAPI, RunHolder]:
    """Check the settings, load the run (LATEST unless one is pinned) and make the app."""
    settings.check()
    keep_large_blocks_mapped()
    if not limit_model_threads(settings.model_threads):
        logging.getLogger("vasrch.service").warning(
            "TensorFlow already runs in this process: --model-threads %d not applied",
            settings.model_threads,
        )
    holder = RunHolder(settings.workspace, settings.run, settings.search, settings.store)
    return create_app(settings, holder), holder


def app_from_environment() -> FastAPI:
    """The app of one worker process, from the settings its parent put in the environment."""
    return build_app(ServiceSettings.from_json(os.environ[SETTINGS_ENV]))[0]


def bind(host: str, port: int, port_option: str = "--port") -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or UsageError saying why not
    and naming `port_option`, the option that sets the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        raise UsageError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; choose another "
            f"{port_option} or stop what is using it"
        ) from None


def _config(app: Any, settings: ServiceSettings, **more: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=JSONErrorH11Protocol,
        access_log=False,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        **more,
    )


class QueryServer:
    """The service bound to a socket at creation, served by `serve_forever` (in a thread, if
    you like) until `shutdown`, with its record in the workspace meanwhile (query flows find it
    there); `server_close` releases the socket."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        check_unserved(settings.workspace)  # before the run loads: refused at once
        self.app, self.holder = build_app(settings)
        self.socket = bind(settings.host, settings.port, settings.port_option)
        self._server = uvicorn.Server(_config(self.app, settings, log_config=None))
        self._done = threading.Event()

    @property
    def server_address(self) -> tuple[str, int]:
        """(host, port) of the listening socket (the real port when 0 was asked)."""
        host, port = self.socket.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        """http://host:port of the listening socket, as a client on this machine reaches it."""
        return client_url(*self.server_address)

    def serve_forever(self) -> None:
        """Answer requests until `shutdown` is called."""
        try:
            with _advertised(self.settings, self.url):
                self._server.run(sockets=[self.socket])
        finally:
            self._done.set()

    def shutdown(self, timeout_s: float = 30) -> None:
        """Stop serving (requests in flight are finished) and wait for `serve_forever` to end."""
        self._server.should_exit = True
        self._done.wait(timeout_s)

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


def _advertised(settings: ServiceSettings, url: str) -> AbstractContextManager[object]:
    """The service's record in its workspace while it serves (see vasrch.service.record)."""
    return advertise(
        settings.workspace, url, settings.instance, settings.token is not None, settings.secret
    )


def _hangup(settings: ServiceSettings) -> Callable[[], None]:
    """What SIGHUP does to a one-process service: it says why there is nothing to reload."""
    if settings.run is not None:
        reason = f"it serves the pinned run {settings.run}; restart it to serve another"
    else:
        reason = f"it follows runs/LATEST (checked every {settings.reload_interval_s:g} s)"
    return lambda: log.info("SIGHUP: nothing to reload: %s", reason)


def make_server(workspace: Path, **options: Any) -> QueryServer:
    """Load the run (LATEST unless `run=` pins one) and bind the server; `options` are
    `ServiceSettings` fields. Port 0 picks a free port."""
    return QueryServer(ServiceSettings(workspace=Path(workspace), **options))


def run_query_server(settings: ServiceSettings) -> None:
    """Serve queries until interrupted (Ctrl-C, SIGTERM), following runs/LATEST unless a run is
    pinned; with `workers` > 1, in that many processes sharing the socket (SIGHUP restarts
    them). However it stops, the workspace's service record is removed or restored;
    ServiceRunning, before anything loads, when another process serves the workspace."""
    settings.check()
    check_unserved(settings.workspace)
    logging.config.dictConfig(logging_config())
    if settings.public_without_token:
        log.warning(
            "listening on %s without a token (--allow-public): anyone who can reach it can "
            "query the catalog and read /metrics",
            settings.host,
        )
    if settings.workers == 1:
        app, holder = build_app(settings)
        sock = bind(settings.host, settings.port, settings.port_option)
        served = holder.served
        log.info(
            "serving run %s (%d images, k=%d) on http://%s:%d%s",
            served.run_id,
            served.searcher.index.n,
            served.searcher.index.k,
            *sock.getsockname()[:2],
            " (pinned)" if holder.pinned else ", following runs/LATEST",
        )
        try:
            with (
                stopped_by_signals(_hangup(settings)),
                _advertised(settings, client_url(*sock.getsockname()[:2])),
            ):
                uvicorn.Server(_config(app, settings, log_config=None)).run(sockets=[sock])
        except Stopped as signal_name:
            log.info("stopped by %s", signal_name)
        return
    resolve_run(settings.workspace, settings.run)
    log.info("starting %d worker processes; each loads the run", settings.workers)
    url = client_url(settings.host, settings.port)
    with (
        tempfile.TemporaryDirectory(prefix="vasrch-metrics-") as folder,
        _advertised(settings, url) if settings.port else nullcontext(),
    ):
        os.environ[SETTINGS_ENV] = settings.to_json()
        os.environ[MULTIPROCESS_ENV] = folder
        uvicorn.run(
            "vasrch.service.runner:app_from_environment",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            http=JSONErrorH11Protocol,
            access_log=False,
            log_config=logging_config(),
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        )
