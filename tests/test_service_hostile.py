"""Hostile requests to the query service (issue 19): bodies of many multipart parts, random
method tokens, huge filters, log-forging paths. Each is refused or folded cheaply, and the
service keeps answering."""

from __future__ import annotations

import logging
import secrets
import time

import pytest

from tests.service_helpers import (
    exchange,
    metric_values,
    request,
)
from vasrch.service.runner import QueryServer


def test_random_methods_fold_into_one_metric_label(server: QueryServer) -> None:
    tokens = [f"X{secrets.token_hex(6).upper()}" for _ in range(40)]
    for token in tokens:
        status, _, _ = exchange(server, token, "/query")
        assert status in (400, 405)
        exchange(server, token, f"/nowhere-{token}")
    text = exchange(server, "GET", "/metrics")[2].decode()
    assert not any(token in text for token in tokens)
    values = metric_values(server)
    assert values['vasrch_requests_total{method="other",path="/query",status="405"}'] >= 40
    assert values['vasrch_requests_total{method="other",path="other",status="404"}'] >= 40
    assert request(server, "GET", "/health")[0] == 200


def test_access_log_fields_are_escaped(
    server: QueryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vasrch.access")
    forged = "/x%0aGET%20/query%20200%201.0%20ms%20127.0.0.1:1%0d%1b[2J%C3%A9"
    assert exchange(server, "GET", forged)[0] == 404

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "vasrch.access"]

    deadline = time.monotonic() + 5
    while not any("/x" in line for line in lines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in lines() if "/x" in line]
    path = r"/x\nGET\x20/query\x20200\x201.0\x20ms\x20127.0.0.1:1\r\x1b[2J\xe9"
    assert line.startswith(f"GET {path} 404 ")
    assert line.isprintable() and line.isascii()
