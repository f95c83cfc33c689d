"""Hostile requests to the query service (issue 19): bodies of many multipart parts, random
method tokens, huge filters, log-forging paths. Each is refused or folded cheaply, and the
service keeps answering."""

from __future__ import annotations

import base64
import logging
import secrets
import time
from pathlib import Path

import pytest

from tests.service_helpers import (
    catalog_image,
    exchange,
    metric_values,
    multipart,
    request,
    to_json_body,
    upload,
)
from vasrch.service.runner import QueryServer
from vasrch.service.schemas import MAX_FILTER_COLUMNS, MAX_FILTER_TEXT, MAX_FILTER_VALUES
from vasrch.service.uploads import MAX_PARTS

BOUNDARY = "vasrch-hostile-boundary"


def form(parts: list[tuple[dict[str, str], bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of `parts` (headers, content)."""
    body = b""
    for headers, content in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        body += f"--{BOUNDARY}\r\n{head}\r\n".encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def field(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'form-data; name="{name}"'}


def image_field(**more: str) -> dict[str, str]:
    return {"Content-Disposition": 'form-data; name="image"; filename="q.jpg"', **more}


def test_a_body_of_many_multipart_parts_is_refused_and_a_few_are_read(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    notes = [(field(f"n{i}"), b"x") for i in range(2000)]
    body, ctype = form([*notes, (image_field(), jpeg)])
    assert len(body) < 200_000  # within the upload limit: only the parts are too many
    status, answer = upload(server, body, ctype=ctype)
    assert status == 400 and f"more than {MAX_PARTS} parts" in answer["error"]

    most, ctype = form([*notes[: MAX_PARTS - 1], (image_field(), jpeg)])
    status, answer = upload(server, most, ctype=ctype)
    assert status == 200 and answer["query"] == "q.jpg"
    assert answer["results"][0]["image_id"] == "hat/hat_001.jpg"
    # a part in base64 (a deprecated Content-Transfer-Encoding) is still read
    encoded = base64.encodebytes(jpeg)
    body, ctype = form([(image_field(**{"Content-Transfer-Encoding": "base64"}), encoded)])
    status, again = upload(server, body, ctype=ctype)
    assert status == 200 and again["results"] == answer["results"]
    body, _ = multipart("image", "q.jpg", jpeg)
    status, answer = upload(server, body, ctype="multipart/form-data")
    assert status == 400 and "no boundary" in answer["error"]


def test_huge_filters_are_refused_before_any_work(server: QueryServer, demo_catalog: Path) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    many = [f"v{i}" for i in range(MAX_FILTER_VALUES + 1)]
    cases = [
        upload(server, to_json_body(jpeg, filters={"category": many}), ctype="application/json"),
        upload(server, jpeg, "?filter.category=" + ",".join(many)),
        request(server, "GET", "/query?id=hat/hat_001.jpg&filter.category=" + ",".join(many)),
        upload(
            server,
            to_json_body(jpeg, filters={"category": "x" * (MAX_FILTER_TEXT + 1)}),
            ctype="application/json",
        ),
        upload(
            server,
            to_json_body(jpeg, filters={f"c{i}": "x" for i in range(MAX_FILTER_COLUMNS + 1)}),
            ctype="application/json",
        ),
    ]
    # tens of thousands of tiny values: refused from the body's bytes, before JSON parsing
    tiny = to_json_body(jpeg[:100], filters={"category": ["v"] * 60_000})
    cases.append(upload(server, tiny, ctype="application/json"))
    for status, answer in cases:
        assert status == 400 and f"At most {MAX_FILTER_COLUMNS} columns" in answer["error"]
    assert "beside image_base64" in cases[-1][1]["error"]
    # at the limits, filters work as before
    status, answer = upload(server, jpeg, "?filter.category=hat," + ",".join(many[:-2]))
    assert status == 200 and answer["results"]
    assert {r["category"] for r in answer["results"]} == {"hat"}
    # a filter that no product passes: no answers (it was a 500)
    for status, answer in (
        upload(server, jpeg, "?filter.category=no-such-category"),
        request(server, "GET", "/query?id=hat/hat_001.jpg&filter.category=no-such-category"),
    ):
        assert status == 200 and answer["results"] == []


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
