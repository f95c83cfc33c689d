"""The query service over real loopback HTTP (uvicorn on a free port), on a run trained from the
generated demo catalog: every endpoint, each bad input, the token, CORS, metrics, reloads, and
memory under a burst of big uploads (in a `vasrch query-server` child process)."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.imagefactory import shopper_copy, write_flat_rgb_png, write_png_bomb, write_png_declaring
from vasrch.orchestration.flows.train import train_flow
from vasrch.service.runner import QueryServer, make_server
from vasrch.service.settings import ServiceSettings
from vasrch.workspace import runs

MAX_UPLOAD = 200_000
TOKEN = "test-token-5f1c"
ORIGIN = "https://shop.example"


def _config(folder: Path, catalog: Path, workspace: Path) -> Path:
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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path) -> Path:
    """A workspace with one complete run (LATEST) of the 48-image demo catalog."""
    folder = tmp_path_factory.mktemp("server")
    train_flow(str(_config(folder, demo_catalog, folder / "ws")))
    return folder / "ws"


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


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[QueryServer]:
    with serving(workspace, max_upload_bytes=MAX_UPLOAD, top_n=5, show_paths=True) as s:
        yield s


@pytest.fixture(scope="module")
def guarded(workspace: Path) -> Iterator[QueryServer]:
    """A pinned server with a token, one CORS origin, no access log, and one decode slot that
    nobody waits for."""
    run = runs.latest_run_id(workspace)
    options = {"token": TOKEN, "cors_origins": (ORIGIN,), "access_log": False}
    with serving(workspace, run=run, decode_slots=1, decode_wait_s=0, **options) as s:
        yield s


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


def test_health_names_the_latest_run(server: QueryServer, workspace: Path) -> None:
    status, body = request(server, "GET", "/health")
    assert status == 200
    assert body["run_id"] == runs.latest_run_id(workspace)
    assert body["images"] == 48
    assert body["k"] >= 2
    assert body["uptime_s"] >= 0
    assert body["reload_error"] is None


@pytest.mark.parametrize("image_id", ["shoe/shoe_000.png", "mug/mug_004.jpg"])
def test_uploaded_copy_of_a_catalog_photo_finds_its_product_first(
    server: QueryServer, demo_catalog: Path, image_id: str
) -> None:
    suffix = Path(image_id).suffix.lstrip(".")
    status, body = upload(server, catalog_image(demo_catalog, image_id), ctype=f"image/{suffix}")
    assert status == 200, body
    assert body["run_id"] == server.holder.served.run_id
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["image_id"] == results[0]["product_id"] == image_id
    assert results[0]["category"] == image_id.split("/")[0]
    assert results[0]["score"] > 0.99  # under 1: query expansion blends in the best answers
    assert Path(results[0]["path"]).resolve() == (demo_catalog / image_id).resolve()
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert body["ms"] > 0
    # the catalog photo's own bytes: its product is left out, as asking for it by id does
    status, exact = upload(server, (demo_catalog / image_id).read_bytes(), ctype=f"image/{suffix}")
    assert status == 200 and image_id not in [r["product_id"] for r in exact["results"]]
    assert len(exact["results"]) == 5


def test_filters_in_the_query_string_and_the_json_body(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    status, body = upload(server, jpeg, "?filter.category=mug,bag&top_n=8")
    assert status == 200, body
    assert len(body["results"]) == 8 and {r["category"] for r in body["results"]} <= {"mug", "bag"}
    as_json = to_json_body(jpeg, filters={"category": "shoe"}, top_n=6)
    status, body = upload(server, as_json, ctype="application/json")
    assert status == 200, body
    assert [r["category"] for r in body["results"]] == ["shoe"] * 6
    status, by_id = request(server, "GET", "/query?id=hat/hat_001.jpg&filter.category=watch")
    assert status == 200 and {r["category"] for r in by_id["results"]} == {"watch"}
    status, body = request(server, "GET", "/query?id=hat/hat_001.jpg&filter.colour=red")
    assert status == 400 and "unknown filter column 'colour'" in body["error"]
    assert "category" in body["error"]


def test_multipart_upload_and_query_by_id_agree(server: QueryServer, demo_catalog: Path) -> None:
    image_id = "bag/bag_002.jpg"
    form, ctype = multipart("image", "my bag.jpg", catalog_image(demo_catalog, image_id))
    status, uploaded = upload(server, form, "?top_n=6&probes=2", ctype)
    assert status == 200, uploaded
    assert uploaded["query"] == "my bag.jpg"
    assert uploaded["results"][0]["product_id"] == image_id

    status, by_id = request(server, "GET", f"/query?id={quote(image_id)}&top_n=5&probes=2")
    assert status == 200, by_id
    assert by_id["query"] == image_id
    ids = [r["image_id"] for r in by_id["results"]]
    assert image_id not in ids and len(ids) == 5
    # By id, the query is the photo's stored (augmented) vector; uploaded, its own features: the
    # answers agree on the neighbours up to the order of near ties.
    assert len(set(ids) & {r["image_id"] for r in uploaded["results"][1:]}) >= 4


def test_bad_requests_get_4xx_reasons_and_the_server_keeps_serving(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    form_without_image, form_type = multipart("picture", "x.jpg", jpeg)
    cases = [
        (upload(server, b"this is not an image at all"), 400, "not a usable image"),
        (upload(server, jpeg[: len(jpeg) // 2]), 400, "truncated"),
        (upload(server, b""), 400, "empty upload"),
        (upload(server, os.urandom(MAX_UPLOAD + 1)), 413, "larger than the limit"),
        (upload(server, jpeg, ctype="text/plain"), 415, "Content-Type"),
        (upload(server, form_without_image, ctype=form_type), 400, "no field named 'image'"),
        (upload(server, jpeg, "?top_n=0"), 400, "top_n"),
        (upload(server, jpeg, "?probes=many"), 400, "probes"),
        (request(server, "GET", "/query?id=hat/hat_001.jpg&top_n=100000"), 400, "top_n"),
        (request(server, "GET", "/query?id=hat/hat_001.jpg&topn=3"), 400, "unknown"),
        (request(server, "GET", "/query?id=no/such/image.jpg"), 404, "not in run"),
        (request(server, "GET", "/query"), 400, "id="),
        (request(server, "GET", "/nowhere"), 404, "no such path"),
        (request(server, "DELETE", "/query"), 405, "not allowed"),
        (request(server, "POST", "/health", b"{}"), 405, "not allowed"),
    ]
    for (status, body), expected, fragment in cases:
        assert status == expected, (expected, fragment, body)
        assert fragment in body["error"], (fragment, body)

    status, body = request(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, body = upload(server, jpeg)
    assert status == 200 and body["results"][0]["image_id"] == "hat/hat_001.jpg"


def test_oversized_upload_is_refused_from_its_content_length(server: QueryServer) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest("POST", "/query")
        conn.putheader("Content-Type", "image/jpeg")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "larger than the limit" in json.loads(response.read())["error"]
    finally:
        conn.close()


def test_concurrent_uploads_each_get_their_own_answer(
    server: QueryServer, demo_catalog: Path
) -> None:
    ids = [f"{c}/{c}_00{i}.jpg" for c in ("tshirt", "trousers", "bottle", "watch") for i in (1, 2)]
    answers: dict[str, list[str]] = {}

    def client(image_id: str) -> None:
        data = catalog_image(demo_catalog, image_id)
        answers[image_id] = [upload(server, data)[1]["results"][0]["image_id"] for _ in range(3)]

    threads = [threading.Thread(target=client, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert answers == {i: [i, i, i] for i in ids}


def test_failed_reload_keeps_serving_the_old_run(workspace: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    old = runs.latest_run_id(ws)
    with serving(ws, reload_interval_s=0.05) as server:
        before = request(server, "GET", "/query?id=hat/hat_001.jpg")[1]["results"]
        # The served run's vectors are truncated, then rewritten, under the server: it keeps
        # answering from what it loaded and verified.
        vectors = runs.runs_dir(ws) / old / "index" / "vectors.npy"
        size = vectors.stat().st_size
        with vectors.open("r+b") as f:
            f.truncate(size // 3)
        assert request(server, "GET", "/query?id=hat/hat_001.jpg")[1]["results"] == before
        vectors.write_bytes(np.random.default_rng(0).bytes(size))
        assert request(server, "GET", "/query?id=hat/hat_001.jpg")[1]["results"] == before

        broken = runs.runs_dir(ws) / "20990101T000000Z-broken"
        shutil.copytree(runs.runs_dir(workspace) / old, broken)
        (broken / "index" / "centroids.npy").write_bytes(b"tampered")
        runs.set_latest(ws, broken.name)
        deadline = time.monotonic() + 30
        body: dict[str, Any] = {}
        while time.monotonic() < deadline and not body.get("reload_error"):
            time.sleep(0.05)
            body = request(server, "GET", "/health")[1]
        assert body["run_id"] == old
        assert broken.name in body["reload_error"] and "sha256" in body["reload_error"]
        status, answer = request(server, "GET", "/query?id=hat/hat_001.jpg")
        assert status == 200 and answer["run_id"] == old and answer["results"] == before
        assert server.holder.refresh() is False
        metrics = metric_values(server)
        assert metrics["vasrch_reload_failures_total"] == 1
        assert metrics["vasrch_reloads_total"] == 0
        assert metrics[f'vasrch_served_run{{run_id="{old}"}}'] == 1


def test_queries_throughout_a_retrain_all_succeed_against_complete_runs(
    workspace: Path, tmp_path: Path, demo_catalog: Path
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    old = runs.latest_run_id(ws)
    config = _config(tmp_path, demo_catalog, ws)
    jpeg = catalog_image(demo_catalog, "watch/watch_001.jpg")
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_LOGGING_LEVEL": "ERROR",
    }
    answers: list[tuple[int, str | None]] = []
    with serving(ws, reload_interval_s=0.2) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vasrch.cli", "run", str(config), "--no-progress"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 240
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if len(answers) % 2:
                    status, body = upload(server, jpeg)
                else:
                    status, body = request(server, "GET", "/query?id=watch/watch_001.jpg")
                answers.append((status, body.get("run_id")))
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate()[1].decode(errors="replace")
        assert proc.returncode == 0, stderr[-3000:]
        new = runs.latest_run_id(ws)
        assert new != old
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and request(server, "GET", "/health")[1]["run_id"] != new:
            time.sleep(0.05)
        status, body = upload(server, jpeg)
        answers.append((status, body.get("run_id")))
        metrics = metric_values(server)
        assert metrics["vasrch_reloads_total"] >= 1
        assert metrics[f'vasrch_served_run{{run_id="{new}"}}'] == 1
        assert metrics[f'vasrch_served_run{{run_id="{old}"}}'] == 0

    complete = {r["run_id"] for r in runs.list_runs(ws)}
    assert len(answers) > 10
    assert all(status == 200 for status, _ in answers), answers
    assert {run_id for _, run_id in answers} <= complete
    assert answers[0][1] == old and answers[-1][1] == new
    assert body["results"][0]["image_id"] == "watch/watch_001.jpg"


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


def test_json_base64_upload_answers_like_the_raw_upload(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "bottle/bottle_002.jpg")
    status, uploaded = upload(server, jpeg, "?top_n=4")
    assert status == 200, uploaded
    status, as_json = upload(server, to_json_body(jpeg, top_n=4), ctype="application/json")
    assert status == 200, as_json
    assert as_json["results"] == uploaded["results"] and len(uploaded["results"]) == 4
    data_url = b"data:image/jpeg;base64," + base64.b64encode(jpeg)
    body = json.dumps({"image_base64": data_url.decode(), "probes": 2, "filters": {}}).encode()
    status, answer = upload(server, body, "?top_n=3", ctype="application/json")
    assert status == 200, answer
    assert answer["results"][0]["image_id"] == "bottle/bottle_002.jpg"
    assert len(answer["results"]) == 3


def test_bad_json_bodies_and_big_images_get_4xx_reasons(
    server: QueryServer, demo_catalog: Path, tmp_path: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    as_json = "application/json"
    bomb = write_png_bomb(tmp_path / "bomb.png", 9400, 9400).read_bytes()  # 88 MP, 11 KB
    huge = write_png_bomb(tmp_path / "huge.png").read_bytes()  # 400 MP: past Pillow's own limit
    liar = write_png_declaring(tmp_path / "liar.png", 8000, 8000).read_bytes()
    cases = [
        (
            upload(server, to_json_body(jpeg, filters={"colour": "red"}), ctype=as_json),
            400,
            "unknown filter column 'colour'",
        ),
        (
            upload(
                server,
                to_json_body(jpeg, filters={"category": "hat"}),
                "?filter.category=hat",
                as_json,
            ),
            400,
            "both",
        ),
        (
            upload(server, to_json_body(jpeg, filters={"category": 3}), ctype=as_json),
            400,
            "filters.category",
        ),
        (
            upload(server, b'{"image_base64": "not base64!"}', ctype=as_json),
            400,
            "not valid base64",
        ),
        (upload(server, b'{"image": "abc"}', ctype=as_json), 400, "image_base64: Field required"),
        (upload(server, to_json_body(jpeg, colour="red"), ctype=as_json), 400, "colour"),
        (upload(server, to_json_body(jpeg, top_n=0), ctype=as_json), 400, "top_n"),
        (upload(server, to_json_body(jpeg, top_n="5"), ctype=as_json), 400, "top_n"),
        (upload(server, to_json_body(jpeg, top_n=3), "?top_n=3", as_json), 400, "both"),
        (upload(server, b"{not json", ctype=as_json), 400, "Invalid JSON"),
        (upload(server, to_json_body(b""), ctype=as_json), 400, "empty upload"),
        (
            upload(server, to_json_body(os.urandom(MAX_UPLOAD + 1)), ctype=as_json),
            413,
            "larger than the limit",
        ),
        (
            upload(server, to_json_body(b"GIF89a not really"), ctype=as_json),
            400,
            "not a usable image",
        ),
        (upload(server, bomb, ctype="image/png"), 413, "larger than the query limit"),
        (upload(server, huge, ctype="image/png"), 413, "larger than the query limit"),
        (upload(server, liar, ctype="image/png"), 413, "max_query_pixels"),
        (upload(server, to_json_body(bomb), ctype=as_json), 413, "larger than the query limit"),
    ]
    for (status, body), expected, fragment in cases:
        assert status == expected, (expected, fragment, body)
        assert fragment in body["error"], (fragment, body)
    assert upload(server, jpeg)[0] == 200


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


def test_token_guards_every_path_but_health(guarded: QueryServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert request(guarded, "GET", "/health")[0] == 200
    for method, path in (
        ("GET", "/query?id=hat/hat_001.jpg"),
        ("POST", "/query"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, got, body = exchange(guarded, method, path, b"", headers)
            assert status == 401 and got["www-authenticate"] == "Bearer", (path, headers)
            assert "Authorization: Bearer" in json.loads(body)["error"]
    for path in ("/query?id=hat/hat_001.jpg", "/metrics", "/docs", "/openapi.json"):
        assert exchange(guarded, "GET", path, headers=auth)[0] == 200, path
    lower = {"Authorization": f"bearer {TOKEN}"}
    status, _, body = exchange(guarded, "GET", "/query?id=hat/hat_001.jpg", headers=lower)
    # a server started without --show-paths answers with ids, never the server's files
    assert status == 200 and all("path" not in r for r in json.loads(body)["results"])


def test_cors_answers_preflights_from_the_named_origin_only(guarded: QueryServer) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    status, headers, _ = exchange(guarded, "OPTIONS", "/query", headers={"Origin": ORIGIN, **ask})
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()
    other = {"Origin": "https://elsewhere.example", **ask}
    status, headers, _ = exchange(guarded, "OPTIONS", "/query", headers=other)
    assert status == 400 and "access-control-allow-origin" not in headers
    # The answers themselves (401s included) carry the header, so the page can read them.
    status, headers, _ = exchange(guarded, "GET", "/query?id=x", headers={"Origin": ORIGIN})
    assert status == 401 and headers["access-control-allow-origin"] == ORIGIN


def test_openapi_and_docs_describe_the_endpoints(server: QueryServer) -> None:
    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200
    assert {"/health", "/query", "/metrics"} <= set(spec["paths"])
    post = spec["paths"]["/query"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "image/*",
        "multipart/form-data",
        "application/json",
    }
    assert {p["name"] for p in post["parameters"]} == {"top_n", "probes"}
    assert {"400", "413", "415", "503"} <= set(post["responses"])
    assert "id" in {p["name"] for p in spec["paths"]["/query"]["get"]["parameters"]}
    status, headers, page = exchange(server, "GET", "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/openapi.json" in page


def test_metrics_count_requests_by_status_and_time_each_step(
    server: QueryServer, demo_catalog: Path
) -> None:
    before = metric_values(server)
    jpeg = catalog_image(demo_catalog, "tshirt/tshirt_001.jpg")
    assert upload(server, jpeg)[0] == 200
    assert upload(server, b"nope")[0] == 400
    assert request(server, "GET", "/query?id=tshirt/tshirt_001.jpg")[0] == 200
    after = metric_values(server)
    ok = 'vasrch_requests_total{method="POST",path="/query",status="200"}'
    bad = 'vasrch_requests_total{method="POST",path="/query",status="400"}'
    assert after[ok] == before.get(ok, 0) + 1
    assert after[bad] == before.get(bad, 0) + 1
    count = 'vasrch_request_duration_seconds_count{method="GET",path="/query"}'
    assert after[count] >= before.get(count, 0) + 1
    assert after["vasrch_embed_seconds_count"] >= before.get("vasrch_embed_seconds_count", 0) + 1
    assert after["vasrch_decode_seconds_count"] >= before.get("vasrch_decode_seconds_count", 0) + 2
    assert after["vasrch_search_seconds_count"] >= before.get("vasrch_search_seconds_count", 0) + 2
    assert after[f'vasrch_served_run{{run_id="{server.holder.served.run_id}"}}'] == 1
    assert after["vasrch_decodes_in_progress"] == 0
    assert "vasrch_reloads_total" in after and "vasrch_reload_failures_total" in after


def test_access_log_has_one_line_per_request_unless_quiet(
    server: QueryServer, guarded: QueryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vasrch.access")
    request(server, "GET", "/query?id=hat/hat_001.jpg")
    request(server, "GET", "/nowhere")
    request(guarded, "GET", "/health")

    def access_lines() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "vasrch.access"
            and r.getMessage().startswith(("GET /query", "GET /nowhere", "GET /health"))
        ]

    # A line is written once its answer is sent, so it may land just after the client read it.
    deadline = time.monotonic() + 5
    while len(access_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the guarded server's /health would have logged by now, were it logging
    lines = access_lines()
    assert len(lines) == 2, lines
    assert re.match(r"GET /query 200 \d+\.\d ms 127\.0\.0\.1:\d+$", lines[0])
    assert re.match(r"GET /nowhere 404 \d+\.\d ms ", lines[1])


def test_busy_decode_slots_answer_503_with_retry_after(
    guarded: QueryServer, tmp_path: Path
) -> None:
    """One decode slot, no waiting: a second upload while a big one decodes gets 503."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}
    big = write_flat_rgb_png(tmp_path / "big.png", 6000, 6000).read_bytes()
    small = write_flat_rgb_png(tmp_path / "small.png", 64, 64).read_bytes()
    first: list[int] = []
    worker = threading.Thread(
        target=lambda: first.append(exchange(guarded, "POST", "/query", big, auth)[0])
    )
    worker.start()
    deadline = time.monotonic() + 30
    decoding = 0.0
    while worker.is_alive() and not decoding and time.monotonic() < deadline:
        decoding = metric_values(guarded, auth)["vasrch_decodes_in_progress"]
    status, headers, body = exchange(guarded, "POST", "/query", small, auth)
    worker.join(timeout=60)
    assert decoding == 1, "the big upload finished before it was seen decoding"
    assert status == 503 and headers["retry-after"] == "1"
    assert "retry" in json.loads(body)["error"]
    assert first == [200]
    assert exchange(guarded, "POST", "/query", small, auth)[0] == 200


def test_public_address_needs_a_token_or_allow_public(workspace: Path) -> None:
    public = ServiceSettings(workspace=workspace, host="0.0.0.0")
    with pytest.raises(ValueError, match="--allow-public"):
        public.check()
    ServiceSettings(workspace=workspace, host="0.0.0.0", token="t").check()
    ServiceSettings(workspace=workspace, host="0.0.0.0", allow_public=True).check()
    ServiceSettings(workspace=workspace, host="localhost").check()
    with pytest.raises(ValueError, match="model_threads must be 0 or more"):
        ServiceSettings(workspace=workspace, model_threads=-1).check()
    done = subprocess.run(
        query_server_command(workspace, "--host", "0.0.0.0"),
        capture_output=True,
        text=True,
        env={**os.environ, "VASRCH_TOKEN": ""},
        timeout=120,
    )
    assert done.returncode == 2 and "--allow-public" in done.stderr


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


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RSS from /proc")
def test_memory_stays_bounded_through_a_burst_of_big_uploads(
    workspace: Path, tmp_path: Path, demo_catalog: Path
) -> None:
    """`vasrch query-server` in a child process (token from VASRCH_TOKEN, access log on): 12
    clients at once each send a 25 MP PNG (about 100 MB decoded) and a 88 MP one; two decode at
    a time, the big ones are refused from their header, and memory goes back to rest."""
    port = free_port()
    env = {**os.environ, "VASRCH_TOKEN": TOKEN, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = query_server_command(
        workspace,
        "--port",
        str(port),
        "--max-decodes",
        "2",
        "--decode-wait",
        "60",
    )
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=stderr, stderr=stderr)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}
    accepted = write_flat_rgb_png(tmp_path / "25mp.png", 5000, 5000).read_bytes()
    refused = write_png_bomb(tmp_path / "88mp.png", 9400, 9400).read_bytes()
    try:
        host = ("127.0.0.1", port)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(host, timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        client = http.client.HTTPConnection(*host, timeout=60)
        client.request("POST", "/query", catalog_image(demo_catalog, "hat/hat_001.jpg"), auth)
        assert client.getresponse().status == 200
        time.sleep(1)
        rest = rss_kib(proc.pid)
        statuses: list[int] = []
        peak = rest

        def send(body: bytes) -> None:
            conn = http.client.HTTPConnection(*host, timeout=120)
            conn.request("POST", "/query", body, auth)
            statuses.append(conn.getresponse().status)
            conn.close()

        threads = [threading.Thread(target=send, args=(b,)) for b in [accepted, refused] * 12]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and rss_kib(proc.pid) > rest * 1.1:
            time.sleep(0.2)
        settled = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert sorted(statuses) == [200] * 12 + [413] * 12, text[-2000:]
    # 12 decodes at once would need over 1.2 GB; two slots keep it to two of them (~200 MB).
    assert peak - rest < 450 * 1024, (rest, peak)
    assert settled <= rest * 1.1, (rest, settled)
    assert len(re.findall(r"vasrch\.access INFO POST /query 413 ", text)) == 12


@pytest.mark.slow
def test_workers_share_the_port_and_add_up_their_metrics(
    workspace: Path, tmp_path: Path, demo_catalog: Path
) -> None:
    """`--workers 2`: both processes answer on one port, and /metrics counts every request,
    whichever worker served it (or the scrape)."""
    port = free_port()
    cmd = query_server_command(workspace, "--port", str(port), "--workers", "2")
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            cmd, stdout=stderr, stderr=stderr, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        )
    jpeg = catalog_image(demo_catalog, "shoe/shoe_001.jpg")
    sent = 0
    pids: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while len(pids) < 2 and time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/query", jpeg, {"Content-Type": "image/jpeg"})
                assert conn.getresponse().status == 200
                conn.close()
                sent += 1
            except ConnectionError:
                time.sleep(0.5)
            pids = set(
                re.findall(r"\[(\d+)\] vasrch\.access INFO POST /query 200", log.read_text())
            )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert len(pids) == 2, log.read_text()[-3000:]
    counted = re.search(
        r'vasrch_requests_total\{method="POST",path="/query",status="200"\} (\S+)', text
    )
    assert counted is not None and float(counted[1]) == sent, text


# --- query jobs answered by the service (query_jobs.routing) --------------------------------


@pytest.fixture(scope="module")
def advertised(workspace: Path) -> Iterator[QueryServer]:
    """A service that advertised itself in the workspace's record when it started."""
    with serving(workspace, access_log=False) as s:
        yield s


def query_images(demo_catalog: Path, tmp_path: Path) -> list[Path]:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ids = ["hat/hat_001.jpg", "watch/watch_003.png", "shoe/shoe_000.png"]
    return [demo_catalog / i for i in ids] + [broken]


def test_a_query_job_gets_the_same_answers_from_the_service_as_embedded_here(
    advertised: QueryServer, workspace: Path, demo_catalog: Path, tmp_path: Path, caplog
) -> None:
    from vasrch.config import load_config
    from vasrch.query_jobs.routing import answer_here, answer_queries
    from vasrch.service.record import read_record

    record = read_record(workspace)
    assert (record.url, record.instance) == (advertised.url, advertised.settings.instance)
    assert record.pid == os.getpid() and record.token is False
    cfg = load_config(workspace.parent / "config.yaml")
    files = query_images(demo_catalog, tmp_path)
    with caplog.at_level(logging.INFO, logger="test-routing"):
        served = answer_queries(cfg, files, None, 4, None, logging.getLogger("test-routing"))
    assert f"answered by the query service at {advertised.url}" in caplog.text
    here = answer_here(cfg, files, None, 4, None)
    assert (served.run_id, served.params) == (here.run_id, here.params)
    assert served.answers.rejected == here.answers.rejected
    assert [r["query"] for r in served.answers.rejected] == [str(files[-1])]
    mine, theirs = served.answers.table, here.answers.table
    assert len(mine) == 3 * 4 and list(mine.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(mine.drop(columns="score"), theirs.drop(columns="score"))
    assert mine["score"].dtype == theirs["score"].dtype
    # one image at a time there, batched here: float32 rounding apart
    np.testing.assert_allclose(mine["score"], theirs["score"], atol=1e-5)
    # catalog photos' own bytes: neither path answers a photo with its own product
    own = {str(f): f.relative_to(demo_catalog).as_posix() for f in files[:3]}
    assert not any(own[q] == p for q, p in zip(mine["query"], mine["product_id"], strict=True))


def test_a_served_query_job_loads_no_model_libraries(
    advertised: QueryServer, workspace: Path, demo_catalog: Path
) -> None:
    code = """
import json, sys
from pathlib import Path
from vasrch.config import load_config
from vasrch.query_jobs.routing import answer_served
answered = answer_served(load_config(sys.argv[1]), [Path(sys.argv[2])], None, 2, None)
heavy = sorted({"tensorflow", "keras", "sklearn"} & set(sys.modules))
print(json.dumps([answered.answers.table["image_id"].tolist(), heavy]))
"""
    image = demo_catalog / "mug" / "mug_004.jpg"
    done = subprocess.run(
        [sys.executable, "-c", code, str(workspace.parent / "config.yaml"), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ids, heavy = json.loads(done.stdout.splitlines()[-1])
    # the catalog photo's own bytes: its own product is left out, as a local search does
    assert len(ids) == 2 and "mug/mug_004.jpg" not in ids
    assert heavy == []


def test_a_stale_foreign_or_guarded_service_is_not_used(
    advertised: QueryServer, guarded: QueryServer, workspace: Path, demo_catalog: Path
) -> None:
    from vasrch.query_jobs.service_client import (
        ServiceUnusable,
        find_service,
        search_served,
    )
    from vasrch.search.parameters import SearchParams
    from vasrch.service.record import advertise

    def why(run: str | None = None, token: str | None = None) -> str:
        with pytest.raises(ServiceUnusable) as refusal:
            find_service(workspace, run, token)
        return str(refusal.value)

    with advertise(workspace, advertised.url, advertised.settings.instance, token=False):
        assert find_service(workspace, None, None).url == advertised.url
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        with advertise(workspace, closed, "killed-9", token=False):
            assert "stale record" in why() and "does not answer" in why()
        with advertise(workspace, advertised.url, "an-earlier-one", token=False):
            assert "is another service" in why()
        assert "run 'missing-run' not found" in why(run="missing-run")
    image = [demo_catalog / "hat" / "hat_001.jpg"]
    params = SearchParams(top_n=2, probes=1)
    with advertise(workspace, guarded.url, guarded.settings.instance, token=True):
        assert "needs a token" in why()
        refused = find_service(workspace, None, "a-wrong-token")
        with pytest.raises(ServiceUnusable, match="answered 401"):
            search_served(refused, image, params)
        accepted = find_service(workspace, None, TOKEN)
        table = search_served(accepted, image, params).table
        # the catalog photo's own bytes: answered, its own product left out
        assert len(table) == 2 and "hat/hat_001.jpg" not in table["product_id"].tolist()


def test_a_service_stopping_gives_the_record_back_to_the_one_it_replaced(tmp_path: Path) -> None:
    from vasrch.service.record import advertise, read_record

    workspace = tmp_path / "ws"
    workspace.mkdir()
    with advertise(workspace, "http://127.0.0.1:1", "first", token=False) as first:
        with advertise(workspace, "http://127.0.0.1:2", "second", token=True) as second:
            assert read_record(workspace) == second
        assert read_record(workspace) == first
    assert read_record(workspace) is None
