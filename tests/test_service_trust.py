"""Who a query job or `vasrch query` trusts (issue 19 items 1, 12, 13), and how a service
process leaves its workspace record whichever way it stops (issue 20 items 3, 10): planted
records, impostor servers, hostile answers, real child services and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from tests.service_helpers import (
    TOKEN,
    exchange,
    free_port,
    query_server_command,
    workspace_copy,
)
from vasrch.config import load_config
from vasrch.query_jobs.routing import QuerySetup, answer_here, answer_served
from vasrch.query_jobs.service_client import ServiceUnusable, find_service, search_served
from vasrch.search.parameters import SearchParams
from vasrch.service.record import advertise, identity_proof, read_record
from vasrch.service.runner import QueryServer
from vasrch.workspace import runs


class Impostor(BaseHTTPRequestHandler):
    """A server on loopback that claims to be the workspace's service: it answers /health with
    whatever instance it is told, /identify with a proof made with `key` (None: it has no key),
    and /query with `answer`; it remembers every request's method, path and Authorization."""

    seen: list[tuple[str, str, str | None]]
    instance = ""
    key: str | None = None
    answer: ClassVar[dict[str, Any]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("Authorization")))
        url = urlsplit(self.path)
        if url.path == "/identify":
            nonce = parse_qs(url.query)["nonce"][0]
            port = self.server.server_address[1]
            key = self.key or "a-guess"
            self._reply({"proof": identity_proof(key, self.instance, port, nonce)})
        else:
            self._reply(
                {"status": "ok", "instance": self.instance, **self.answer.get("health", {})}
            )

    def do_POST(self) -> None:
        self.seen.append(("POST", self.path, self.headers.get("Authorization")))
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(self.answer["query"])


@contextmanager
def impostor(**attributes: Any) -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    seen: list[tuple[str, str, str | None]] = []
    handler = type("Handler", (Impostor,), {"seen": seen, **attributes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def refusal(workspace: Path, token: str | None = None) -> str:
    with pytest.raises(ServiceUnusable) as why:
        find_service(workspace, None, token)
    return str(why.value)


def test_a_planted_record_gets_neither_the_token_nor_a_photo(served_workspace: Path) -> None:
    for url in ("data:application/json,{}", "http://example.com:80", "file:///etc/passwd"):
        with advertise(served_workspace, url, "planted", token=True):
            assert "not http(s)://<loopback address>:<port>" in refusal(served_workspace, TOKEN)
    # a server on the port of a dead service knows the record (instance, URL) but not the key
    for token in (True, False):
        with (
            impostor(instance="planted") as (url, seen),
            advertise(served_workspace, url, "planted", token, "the-real-key"),
        ):
            assert "did not prove" in refusal(served_workspace, TOKEN)
        assert [(m, p.partition("?")[0], a) for m, p, a in seen] == [("GET", "/identify", None)]


def test_answers_are_checked_and_never_name_files(
    served_workspace: Path, demo_catalog: Path
) -> None:
    """Even a service that proves its identity cannot steer the job to a file: the answer's
    query and path are ignored, photos outside the run and malformed answers are refused."""
    run_id = runs.latest_run_id(served_workspace)
    health = {"run_id": run_id, "k": 3, "images": 48}
    row = {"rank": 1, "product_id": "mug/mug_004.jpg", "score": 0.9, "image_id": "mug/mug_004.jpg"}
    hostile = {**row, "query": "/dev/zero", "path": "/etc/passwd", "title": "x"}
    image = [demo_catalog / "hat" / "hat_001.jpg"]
    params = SearchParams(top_n=2, probes=1)

    def answered(results: Any) -> pd.DataFrame | str:
        answer = {
            "health": health,
            "query": {"run_id": run_id, "query": "/dev/zero", "results": results},
        }
        with (
            impostor(instance="it", key="k", answer=answer) as (url, _),
            advertise(served_workspace, url, "it", token=False, key="k"),
        ):
            service = find_service(served_workspace, None, None)
            try:
                return search_served(service, image, params).table
            except ServiceUnusable as err:
                return str(err)

    table = answered([hostile])
    assert isinstance(table, pd.DataFrame)
    assert table["query"].tolist() == [str(image[0])]
    assert table["path"].tolist() == [str(demo_catalog / "mug" / "mug_004.jpg")]
    assert "does not hold" in answered([{**row, "image_id": "../../etc/passwd"}])
    assert "at most 2 results" in answered([row, row, row])
    assert "score" in answered([{**row, "score": "NaN"}])
    assert "metadata value" in answered([{**row, "title": {"nested": 1}}])


def test_health_says_only_up_without_the_token(guarded: QueryServer) -> None:
    status, _, body = exchange(guarded, "GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = exchange(guarded, "GET", "/health", headers=auth)
    details = json.loads(body)
    assert status == 200 and details["images"] == 48 and "instance" not in details


def test_a_filter_value_with_a_comma_filters_alike_served_and_here(
    server: QueryServer, served_workspace: Path, demo_catalog: Path
) -> None:
    cfg = load_config(served_workspace.parent / "config.yaml")
    setup = QuerySetup(cfg.workspace, cfg.search, cfg.features)
    mine = server.settings
    files = [demo_catalog / "shoe" / "shoe_000.png"]
    tables = {}
    with advertise(served_workspace, server.url, mine.instance, False, mine.secret):
        for value in (["hat,bag", "watch"], ["hat", "bag", "watch"]):
            filters = {"category": value}
            served = answer_served(setup, files, None, 4, None, filters).answers.table
            here = answer_here(setup, files, None, 4, None, filters).answers.table
            assert served["product_id"].tolist() == here["product_id"].tolist(), filters
            tables[len(value)] = served
    # no product's category is "hat,bag": only watches match it, on either path
    assert tables[2]["category"].eq("watch").all() and len(tables[2]) == 4
    assert not tables[3]["category"].eq("watch").all()


def vasrch(*args: str) -> list[str]:
    return [sys.executable, "-m", "vasrch.cli", *args]


@contextmanager
def child_service(workspace: Path, log: Path, *options: str) -> Iterator[subprocess.Popen]:
    """`vasrch query-server` on a free port in a child process, once its record is written and
    it answers."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            query_server_command(workspace, "--port", str(port), *options),
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while read_record(workspace) is None or read_record(workspace).pid != proc.pid:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "ok"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.slow  # long: run with -m slow
def test_every_way_a_service_stops_leaves_a_true_record(
    served_workspace: Path, demo_catalog: Path, tmp_path: Path
) -> None:
    workspace = workspace_copy(served_workspace, tmp_path)
    log = tmp_path / "service.log"
    image = str(demo_catalog / "hat" / "hat_001.jpg")
    with child_service(workspace, log) as first:
        record = read_record(workspace)
        # a second service of the workspace is refused, before loading anything
        second = subprocess.run(
            query_server_command(workspace, "--port", str(free_port())),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"already serves {workspace} at {record.url} (pid {first.pid}" in second.stderr
        # SIGHUP: nothing to reload, it keeps serving under the same record
        first.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert first.poll() is None and read_record(workspace) == record
        # `vasrch query` sends its image to the warm service
        start = time.perf_counter()
        done = subprocess.run(
            vasrch("query", "--workspace", str(workspace), image, "--top-n", "3"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.perf_counter() - start
        assert done.returncode == 0, done.stderr
        assert f"answered by the query service at {record.url}" in done.stdout
        print(f"one-image CLI query with a warm service: {took:.2f} s")
        assert took < 5  # about 0.9 s alone on a laptop; the CI machine is shared
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, log.read_text()
    assert read_record(workspace) is None, log.read_text()
    # SIGINT (Ctrl-C) too
    with child_service(workspace, log) as proc:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert read_record(workspace) is None, log.read_text()
    # a killed service cannot clean up: a reader says so plainly, and a new service replaces it
    with child_service(workspace, log) as proc:
        proc.kill()
        proc.wait(30)
    assert "is no longer running" in refusal(workspace)
    with child_service(workspace, log) as proc:
        assert read_record(workspace).pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert read_record(workspace) is None


def test_serve_names_the_port_in_use_and_its_option(tmp_path: Path, write_config) -> None:
    config = write_config({"catalog": {"path": str(tmp_path)}, "workspace": str(tmp_path / "ws")})
    with socket_in_use() as port:
        done = subprocess.run(
            vasrch("serve", str(config), "--files-port", str(port)),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"},
        )
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "--files-port" in done.stderr


@contextmanager
def socket_in_use() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
