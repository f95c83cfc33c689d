"""The query server over real loopback HTTP, on a run trained from the generated demo catalog."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from vasrch import runs
from vasrch.orchestration.flows.train import train_flow
from vasrch.service.runner import QueryServer, make_server

MAX_UPLOAD = 200_000


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
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[QueryServer]:
    with serving(workspace, max_upload_bytes=MAX_UPLOAD, top_n=5) as s:
        yield s


def request(
    server: QueryServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        conn.close()


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
    return (demo_catalog / image_id).read_bytes()


def test_health_names_the_latest_run(server: QueryServer, workspace: Path) -> None:
    status, body = request(server, "GET", "/health")
    assert status == 200
    assert body["run_id"] == runs.latest_run_id(workspace)
    assert body["images"] == 48
    assert body["k"] >= 2
    assert body["uptime_s"] >= 0
    assert body["reload_error"] is None


@pytest.mark.parametrize("image_id", ["shoe/shoe_000.png", "mug/mug_004.jpg"])
def test_uploaded_catalog_image_finds_itself_first(
    server: QueryServer, demo_catalog: Path, image_id: str
) -> None:
    suffix = Path(image_id).suffix.lstrip(".")
    status, body = upload(server, catalog_image(demo_catalog, image_id), ctype=f"image/{suffix}")
    assert status == 200, body
    assert body["run_id"] == server.holder.served.run_id
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["image_id"] == image_id
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert Path(results[0]["path"]).resolve() == (demo_catalog / image_id).resolve()
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert body["ms"] > 0


def test_multipart_upload_and_query_by_id_agree(server: QueryServer, demo_catalog: Path) -> None:
    image_id = "bag/bag_002.jpg"
    form, ctype = multipart("image", "my bag.jpg", catalog_image(demo_catalog, image_id))
    status, uploaded = upload(server, form, "?top_n=6&probes=2", ctype)
    assert status == 200, uploaded
    assert uploaded["query"] == "my bag.jpg"
    assert uploaded["results"][0]["image_id"] == image_id

    status, by_id = request(server, "GET", f"/query?id={quote(image_id)}&top_n=5&probes=2")
    assert status == 200, by_id
    assert by_id["query"] == image_id
    ids = [r["image_id"] for r in by_id["results"]]
    assert image_id not in ids and len(ids) == 5
    assert ids == [r["image_id"] for r in uploaded["results"][1:]]


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
        broken = runs.runs_dir(ws) / "20990101T000000Z-broken"
        shutil.copytree(runs.runs_dir(ws) / old, broken)
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
        assert status == 200 and answer["run_id"] == old
        assert server.holder.refresh() is False


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

    complete = {r["run_id"] for r in runs.list_runs(ws)}
    assert len(answers) > 10
    assert all(status == 200 for status, _ in answers), answers
    assert {run_id for _, run_id in answers} <= complete
    assert answers[0][1] == old and answers[-1][1] == new
    assert body["results"][0]["image_id"] == "watch/watch_001.jpg"
