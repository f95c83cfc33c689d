"""A query service kept warm in a thread of another process (`vasrch serve --with-query-service`),
started as soon as the workspace has a run: serving the deployments of a new shop, it waits for
the first train run to publish LATEST, then follows LATEST like `vasrch query-server`."""

from __future__ import annotations

import logging
import threading

from vasrch.service.runner import QueryServer
from vasrch.service.settings import ServiceSettings
from vasrch.workspace.runs import latest_run_id

log = logging.getLogger("vasrch.server")


class BackgroundService:
    """`start` runs the service in a daemon thread once runs/LATEST names a run (checked every
    `wait_s`); a run that fails to load is logged and waited past; `stop` ends it."""

    def __init__(self, settings: ServiceSettings, wait_s: float = 2.0) -> None:
        settings.check()
        self.settings = settings
        self.wait_s = wait_s
        self.server: QueryServer | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # `stop` sees the server once it exists, or none at all
        self._thread = threading.Thread(target=self._run, name="vasrch-query-service", daemon=True)

    def start(self) -> None:
        """Start waiting for a run, then serving, in the background."""
        self._thread.start()

    def _run(self) -> None:
        failed = None
        if latest_run_id(self.settings.workspace) is None:
            log.info(
                "the query service starts on port %d once the workspace has a run",
                self.settings.port,
            )
        while not self._stop.is_set():
            latest = latest_run_id(self.settings.workspace)
            if latest is not None and latest != failed:
                try:
                    server = QueryServer(self.settings)
                except Exception as err:
                    failed = latest
                    log.error("query service not started: run %s: %s", latest, err)
                else:
                    with self._lock:
                        if self._stop.is_set():
                            server.server_close()
                            return
                        self.server = server
                    log.info("query service on %s, following runs/LATEST", server.url)
                    server.serve_forever()
                    return
            self._stop.wait(self.wait_s)

    def stop(self) -> None:
        """Stop serving (or waiting) and release the port."""
        with self._lock:
            self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self._thread.join(self.wait_s + 1)
