"""The service's Prometheus metrics, and the text GET /metrics answers.

With several worker processes (`PROMETHEUS_MULTIPROC_DIR` set, as `--workers` does), every
process writes its values to that folder and /metrics adds them up, whichever worker answers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """Request counts by status, latency, decode/embed/search time, the served run, reloads."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "vasrch_requests",
            "HTTP requests answered, by method, path and status",
            ["method", "path", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "vasrch_request_duration_seconds",
            "Time from request to answer, by method and path",
            ["method", "path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decode = Histogram(
            "vasrch_decode_seconds",
            "Decoding an uploaded image",
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.embed = Histogram(
            "vasrch_embed_seconds",
            "Embedding one query image",
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.search = Histogram(
            "vasrch_search_seconds",
            "Searching the index for one query",
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.decoding = Gauge(
            "vasrch_decodes_in_progress",
            "Uploads being decoded now",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.waiting = Gauge(
            "vasrch_decodes_waiting",
            "Uploads waiting for a decode slot",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.served_run = Gauge(
            "vasrch_served_run",
            "1 for the run being served, 0 for runs served before, by run id",
            ["run_id"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.reloads = Counter(
            "vasrch_reloads", "Runs swapped in after runs/LATEST changed", registry=registry
        )
        self.reload_failures = Counter(
            "vasrch_reload_failures",
            "Runs named by runs/LATEST that failed to load or verify (the old run kept serving)",
            registry=registry,
        )
        self._run_id: str | None = None
        self._reloads = 0
        self._failures = 0

    def serving(self, run_id: str, reloads: int, failures: int) -> None:
        """Record the served run and the holder's reload counts (called after each check)."""
        if run_id != self._run_id:
            if self._run_id is not None:
                self.served_run.labels(self._run_id).set(0)
            self.served_run.labels(run_id).set(1)
            self._run_id = run_id
        self.reloads.inc(reloads - self._reloads)
        self.reload_failures.inc(failures - self._failures)
        self._reloads, self._failures = reloads, failures

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
