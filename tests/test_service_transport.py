"""HTTP below the routes: unparseable requests get JSON 400s, Expect: 100-continue, chunked
bodies, keep-alive, Nagle off, 405s."""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

import numpy as np

from tests.service_helpers import MAX_UPLOAD, ORIGIN, catalog_image, exchange, raw, status_and_json
from vasrch.service.runner import QueryServer


def test_transport_errors_get_json_answers(server: QueryServer, demo_catalog: Path) -> None:
    jpeg = catalog_image(demo_catalog, "mug/mug_001.jpg")
    post = b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"

    [answer] = raw(server, post + "Content-Length: ²\r\n\r\n".encode())
    status, body = status_and_json(answer)
    assert status == 400 and "bad Content-Length" in body["error"]

    [answer] = raw(server, post + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
    status, body = status_and_json(answer)
    assert status == 400 and "conflicting Content-Length" in body["error"]

    # Expect: 100-continue with a body over the limit: refused at once, before the body.
    [answer] = raw(server, post + b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
    status, body = status_and_json(answer)
    assert status == 413 and b"connection: close" in answer.lower()

    # ... and with an acceptable one: 100 Continue, then the answer once the body is sent.
    head = post + f"Content-Length: {len(jpeg)}\r\nExpect: 100-continue\r\n\r\n".encode()
    interim, answer = raw(server, head, then=jpeg)
    assert interim.startswith(b"HTTP/1.1 100 ")
    status, body = status_and_json(answer)
    assert status == 200 and body["results"][0]["image_id"] == "mug/mug_001.jpg"

    [answer] = raw(server, post + b"\r\n")
    status, body = status_and_json(answer)
    assert status == 411 and "Content-Length" in body["error"]


def test_chunked_upload_is_read_within_the_limit(server: QueryServer, demo_catalog: Path) -> None:
    """Chunked uploads are read (the old server answered 411), and refused once past the limit."""
    jpeg = catalog_image(demo_catalog, "watch/watch_002.jpg")
    host, port = server.server_address[:2]
    for chunks, expected in (
        ([jpeg[:1000], jpeg[1000:]], 200),
        ([os.urandom(MAX_UPLOAD)] * 2, 413),
    ):
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request(
                "POST",
                "/query",
                body=iter(chunks),
                headers={"Content-Type": "image/jpeg"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            assert response.status == expected, response.read()
        finally:
            conn.close()


def test_keep_alive_survives_a_refused_upload(server: QueryServer) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", "/query", os.urandom(MAX_UPLOAD + 1), {"Content-Type": "image/jpeg"})
        response = conn.getresponse()
        assert response.status == 413 and "larger than the limit" in response.read().decode()
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_answers_do_not_wait_for_delayed_acks(server: QueryServer) -> None:
    """Nagle's algorithm is off: with it, an answer's body (a second write) waited for the
    client's delayed ACK, about 40 ms, on every request of a keep-alive connection."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    ms = []
    try:
        for _ in range(21):
            start = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            ms.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    assert float(np.median(ms)) < 20, ms


def test_405_names_the_allowed_methods_and_preflight_needs_cors(server: QueryServer) -> None:
    status, headers, body = exchange(server, "DELETE", "/query")
    assert status == 405 and headers["allow"] == "GET, POST"
    assert json.loads(body)["error"] == "DELETE is not allowed on /query; use GET or POST"
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    status, headers, _ = exchange(server, "OPTIONS", "/query", headers=preflight)
    assert status == 405 and "access-control-allow-origin" not in headers
