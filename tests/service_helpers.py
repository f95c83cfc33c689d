"""Helpers of the query service tests: a service in a thread, requests over real loopback
HTTP (whole, or raw bytes), upload bodies, metrics, and `vasrch query-server` child processes."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.imagefactory import shopper_copy
from vasrch.service.runner import QueryServer, make_server

MAX_UPLOAD = 200_000
TOKEN = "test-token-5f1c"
ORIGIN = "https://shop.example"


def service_config(folder: Path, catalog: Path, workspace: Path) -> Path:
    data = {
        "catalog": {"path": str(catalog)},
        "workspace": str(workspace),
        "features": {"shard_size": 16},
        "clustering": {"diagnostics": {"k_min": 2, "k_max": 6}},
        "evaluation": {"sample": 16},
        "bulk": {"enabled": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextmanager
def serving(ws: Path, **options: Any) -> Iterator[QueryServer]:
    server = make_server(ws, host="127.0.0.1", port=0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert request(server, "GET", "/health")[0] == 200  # serving, and advertised
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def exchange(
    server: QueryServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one request on a fresh connection."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def request(
    server: QueryServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    status, got, data = exchange(server, method, path, body, headers)
    assert got["content-type"] == "application/json"
    return status, json.loads(data)


def raw(server: QueryServer, data: bytes, then: bytes | None = None) -> list[bytes]:
    """Send raw bytes; collect what comes back until the server closes or goes quiet for a
    second. With `then`, send it after the first answer (a body after 100 Continue)."""
    answers = []
    with socket.create_connection(server.server_address[:2], timeout=1) as sock:
        for chunk in (data, then):
            if chunk is None:
                break
            sock.sendall(chunk)
            got = b""
            try:
                while part := sock.recv(65536):
                    got += part
            except TimeoutError:
                pass
            answers.append(got)
    return answers


def status_and_json(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def upload(server: QueryServer, data: bytes, query: str = "", ctype: str = "image/jpeg"):
    return request(server, "POST", f"/query{query}", data, {"Content-Type": ctype})


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "vasrch-test-boundary-7f3a"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{field}"; filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def catalog_image(demo_catalog: Path, image_id: str) -> bytes:
    return shopper_copy(demo_catalog / image_id)


def metric_values(server: QueryServer, headers: dict[str, str] | None = None) -> dict[str, float]:
    """GET /metrics, parsed: 'name{labels}' -> value."""
    status, got, text = exchange(server, "GET", "/metrics", headers=headers)
    assert status == 200 and got["content-type"].startswith("text/plain")
    values = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def to_json_body(data: bytes, **fields: Any) -> bytes:
    return json.dumps({"image_base64": base64.b64encode(data).decode(), **fields}).encode()


def query_server_command(workspace: Path, *options: str) -> list[str]:
    """`vasrch query-server` on `workspace` with `options`, as a child process runs it."""
    return [
        sys.executable,
        "-m",
        "vasrch.cli",
        "query-server",
        "--workspace",
        str(workspace),
        *options,
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def workspace_copy(workspace: Path, tmp_path: Path) -> Path:
    """A copy of a served workspace for a child service of its own (one service process may
    serve a workspace at a time), without the record of the services of this process."""
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy, symlinks=True)
    (copy / "query-service.json").unlink(missing_ok=True)
    return copy
