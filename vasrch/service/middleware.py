"""ASGI middleware of the service: the access log and request metrics.

Both see requests before any check: metric labels come from closed sets (anything else is
"other"), and log fields are escaped, so a request cannot grow /metrics or forge log lines.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vasrch.service.metrics import ServiceMetrics

access_log = logging.getLogger("vasrch.access")

# Methods and paths that get their own metric labels; any other is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
KNOWN_PATHS = frozenset({"/health", "/query", "/metrics", "/docs", "/redoc", "/openapi.json"})


def label(value: str, known: frozenset[str]) -> str:
    """`value` as a metric label: itself when known, else "other"."""
    return value if value in known else "other"


def escaped(text: str) -> str:
    """`text` as one printable ASCII log field without spaces: control characters, spaces,
    backslashes and non-ASCII written as Python escapes (a decoded path may hold a newline or
    an ESC)."""
    return text.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


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
            method = label(scope["method"], KNOWN_METHODS)
            path = label(scope["path"], KNOWN_PATHS)
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(seconds)
            if self.log_requests:
                client = scope.get("client")
                access_log.info(
                    "%s %s %d %.1f ms %s",
                    escaped(scope["method"]),
                    escaped(scope["path"]),
                    status,
                    seconds * 1000,
                    f"{client[0]}:{client[1]}" if client else "-",
                )
