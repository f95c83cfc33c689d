"""The service over time: reloads when runs/LATEST moves on (or fails to), memory through a
burst of big uploads, metrics and access log, worker processes."""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.imagefactory import write_flat_rgb_png, write_png_bomb
from tests.service_helpers import (
    TOKEN,
    catalog_image,
    free_port,
    metric_values,
    query_server_command,
    request,
    rss_kib,
    service_config,
    serving,
    upload,
    workspace_copy,
)
from vasrch.service.runner import QueryServer
from vasrch.workspace import runs


def test_failed_reload_keeps_serving_the_old_run(served_workspace: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(served_workspace, ws)
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
        shutil.copytree(runs.runs_dir(served_workspace) / old, broken)
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


@pytest.mark.slow  # long: run with -m slow
def test_queries_throughout_a_retrain_all_succeed_against_complete_runs(
    served_workspace: Path, tmp_path: Path, demo_catalog: Path
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(served_workspace, ws)
    old = runs.latest_run_id(ws)
    config = service_config(tmp_path, demo_catalog, ws)
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


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RSS from /proc")
def test_memory_stays_bounded_through_a_burst_of_big_uploads(
    served_workspace: Path, tmp_path: Path, demo_catalog: Path
) -> None:
    """`vasrch query-server` in a child process (token from VASRCH_TOKEN, access log on): 12
    clients at once each send a 25 MP PNG (about 100 MB decoded) and a 88 MP one; two decode at
    a time, the big ones are refused from their header, and memory goes back to rest."""
    port = free_port()
    env = {**os.environ, "VASRCH_TOKEN": TOKEN, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = query_server_command(
        workspace_copy(served_workspace, tmp_path),
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
    served_workspace: Path, tmp_path: Path, demo_catalog: Path
) -> None:
    """`--workers 2`: both processes answer on one port, and /metrics counts every request,
    whichever worker served it (or the scrape)."""
    port = free_port()
    workspace = workspace_copy(served_workspace, tmp_path)
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


def test_a_taken_port_names_the_option_that_sets_it(
    served_workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`vasrch serve --with-query-service` on a taken port names --query-port, not --port."""
    from vasrch.config import load_config
    from vasrch.orchestration.deployments import _warm_service

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="vasrch.server"):
            service = _warm_service(load_config(served_workspace.parent / "config.yaml"), port)
            try:
                deadline = time.monotonic() + 60
                while "not started" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                service.stop()
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "choose another --query-port" in caplog.text
