"""ASGI middleware of the service: the access log and request metrics."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vasrch.service.metrics import ServiceMetrics

access_log = logging.getLogger("vasrch.access")

# Paths that get their own metric labels; any other path is counted as "other".
KNOWN_PATHS = frozenset({"/health", "/query", "/metrics", "/docs", "/redoc", "/openapi.json"})


class Observe:
    """Count and time every request by method, path and status; log one line per request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            method = scope["method"]
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(seconds)
            if self.log_requests:
                client = scope.get("client")
                access_log.info(
                    "%s %s %d %.1f ms %s",
                    method,
                    scope["path"],
                    status,
                    seconds * 1000,
                    f"{client[0]}:{client[1]}" if client else "-",
                )
