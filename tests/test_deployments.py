"""Deployments against a real Prefect server: served flows started through the API as the UI
starts them, and `prefect deploy` with deployments/prefect.yaml."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd
import pytest
import yaml
from markdown_it import MarkdownIt

from tests import configs
from tests.imagefactory import shopper_copy
from tests.test_query_artifact import render
from vasrch.config import ConfigError, load_config
from vasrch.workspace import runs

if TYPE_CHECKING:
    from vasrch.orchestration.flows.train import TrainResult

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
NAMES = ["train", "nightly", "refresh", "bulk", "query", "hide-products"]
RUN_TIMEOUT = 400


def write_config(folder: Path, catalog: Path, **extra: dict) -> Path:
    data = {
        "catalog": {"path": str(catalog)},
        "workspace": str(folder / "workspace"),
        "features": {"shard_size": 16},
        "clustering": {"diagnostics": {"k_max": 10}},
        "evaluation": {"sample": 48},
        "bulk": {"enabled": False},
        "nightly": {"gates": {"min_recall_at_10": 0.5}},
        **extra,
    }
    return configs.write_config(folder, data)


# --- without a server -------------------------------------------------------------------------


def test_prefect_yaml_entrypoints_pool_and_schedule_match_the_flows_and_demo_config(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO)

    spec = yaml.safe_load(PREFECT_YAML.read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert sorted(deployments) == sorted(NAMES)
    nightly = load_config(REPO / "config" / "demo.yaml").nightly
    for name, d in deployments.items():
        path, function = d["entrypoint"].split(":")
        assert (REPO / path).is_file()
        assert load_flow_from_entrypoint(d["entrypoint"]).name == name
        assert function == f"{name.replace('-', '_')}_flow"
        assert d["work_pool"]["name"] == "vasrch"
        assert (REPO / d["parameters"]["config_path"]).is_file()
    assert deployments["nightly"]["schedules"] == [
        {"cron": nightly.cron, "timezone": nightly.timezone}
    ]
    minutes = load_config(REPO / "config" / "demo.yaml").refresh.interval_minutes
    assert deployments["refresh"]["schedules"] == [{"interval": minutes * 60}]
    scheduled = ("nightly", "refresh")
    assert all("schedules" not in d for n, d in deployments.items() if n not in scheduled)


def test_build_deployments_default_the_config_and_schedule_nightly_from_it(tmp_path, demo_catalog):
    from vasrch.orchestration.deployments import build_deployments

    config = write_config(
        tmp_path, demo_catalog, nightly={"cron": "30 3 * * 1-5", "timezone": "Europe/Berlin"}
    )
    built = {d.name: d for d in build_deployments(str(config))}
    assert sorted(built) == sorted(NAMES)
    for d in built.values():
        assert d.parameters == {"config_path": str(config.resolve())}
        assert d.entrypoint.startswith("vasrch.orchestration.flows.")
    [schedule] = built["nightly"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 3 * * 1-5", "Europe/Berlin")
    [every] = built["refresh"].schedules
    assert every.schedule.interval.total_seconds() == 300
    assert all(not built[n].schedules for n in ("train", "bulk", "query", "hide-products"))
    # every parameter of every deployment is described in the UI's form (from the docstrings)
    from prefect.utilities.callables import parameter_schema

    from vasrch.orchestration.flows import bulk, nightly, products, query, refresh, train

    flows = (train.train_flow, nightly.nightly_flow, bulk.bulk_flow, query.query_flow)
    for flow in (*flows, refresh.refresh_flow, products.hide_products_flow):
        for name, field in parameter_schema(flow).model_dump()["properties"].items():
            assert field.get("description"), (flow.name, name)
    assert {n: built[n].concurrency_limit for n in NAMES} == {
        "train": 1,
        "nightly": 1,
        "refresh": 1,
        "bulk": 1,
        "query": None,
        "hide-products": None,
    }


def test_serving_without_an_api_url_says_how_to_start_a_server(tmp_path, demo_catalog):
    from vasrch.orchestration.deployments import serve_deployments

    with pytest.raises(ConfigError, match=r"PREFECT_API_URL is not set.*prefect server start"):
        serve_deployments(str(write_config(tmp_path, demo_catalog)))


# --- a real server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{what}: process exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what}: not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group this test started, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free port with a fresh PREFECT_HOME; yields the environment
    (PREFECT_API_URL included) for clients, and points this process's Prefect at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: healthy(url), 180, "prefect server", proc, log)
        client_env = {**env, "PREFECT_API_URL": url}
        with temporary_settings({PREFECT_API_URL: url}):
            yield client_env
    finally:
        stop(proc)


def read_deployments() -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments()}


class Served(NamedTuple):
    config: Path
    catalog: Path
    process: subprocess.Popen


@pytest.fixture(scope="module")
def served(server, tmp_path_factory, demo_catalog) -> Iterator[Served]:
    """The six deployments served from one process (serve_deployments, polling every second by
    default, with the workspace's query service) on a private copy of the demo catalog."""
    root = tmp_path_factory.mktemp("served")
    catalog = root / "catalog"
    shutil.copytree(demo_catalog, catalog)
    config = write_config(root, catalog)
    env = {
        **server,
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    log = root / "serve.log"
    code = (
        "import sys; from vasrch.orchestration.deployments import serve_deployments; "
        "serve_deployments(sys.argv[1], files_port=0, query_port=0)"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
        )
    try:
        wait_until(lambda: len(read_deployments()) == len(NAMES), 120, "serve", proc, log)
        yield Served(config, catalog, proc)
    finally:
        stop(proc)


def start_and_wait(name: str, parameters: dict):
    """Start a run of a deployment as the UI does, wait for it; (flow run, its result)."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        name=f"{name}/{name}", parameters=parameters, timeout=RUN_TIMEOUT, poll_interval=1
    )
    assert flow_run.state.is_final(), f"{name} still {flow_run.state.name} after {RUN_TIMEOUT} s"
    assert flow_run.state.is_completed(), f"{name}: {flow_run.state.name} {flow_run.state.message}"
    return flow_run, flow_run.state.result()


@pytest.fixture(scope="module")
def trained(served) -> TrainResult:
    config = served.config
    _, result = start_and_wait("train", {"config_path": str(config)})
    return result


@pytest.mark.server
def test_served_deployments_are_registered_with_the_nightly_schedule(served):
    deployments = read_deployments()
    assert sorted(deployments) == sorted(NAMES)
    [schedule] = deployments["nightly"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    config = str(served.config)
    assert "top_n" in refused("query", {"config_path": config, "images": ["/q.jpg"], "top_n": 0})
    assert "images" in refused("query", {"config_path": config})
    assert "csv" in refused("bulk", {"config_path": config, "csv": "maybe"})
    assert "overrides" in refused("nightly", {"config_path": config, "overrides": [1]})


def refused(name: str, parameters: dict) -> str:
    """The server's refusal of a flow run with `parameters` (checked against the parameter
    schema the flow's signature gives its deployment); fails when the run is created."""
    from prefect.deployments import run_deployment

    with pytest.raises(Exception, match=r"[Vv]alidation") as refusal:
        run_deployment(name=f"{name}/{name}", parameters=parameters, timeout=0)
    return str(refusal.value)


@pytest.mark.server
def test_train_started_through_the_api_publishes_latest(served, trained):
    config = served.config
    workspace = load_config(config).workspace
    run_dir = trained.run_dir
    assert run_dir.is_dir() and run_dir.parent == runs.runs_dir(workspace)
    assert runs.latest_run_id(workspace) == trained.run_id == run_dir.name
    assert runs.read_manifest(run_dir) == trained.manifest
    assert trained.manifest.counts.indexed == 48 and trained.extract.new == 48
    # the artifacts point into the published run: the plot is in the UI itself, the report's
    # link opens (served read-only by vasrch serve)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["elbow-silhouette-plot", "run-report"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    by_key = {a.key: a for a in found}
    plot = base64.b64encode((run_dir / "diagnostics" / "elbow_silhouette.png").read_bytes())
    assert f"data:image/png;base64,{plot.decode()}" in by_key["elbow-silhouette-plot"].data
    link = re.search(r"\((http://[^)]+)\)", by_key["run-report"].data).group(1)
    assert link.endswith(f"/runs/{run_dir.name}/report.html")
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.read() == (run_dir / "report.html").read_bytes()


@pytest.mark.server
@pytest.mark.slow  # a nightly through the API: about 17 s
def test_nightly_on_an_unchanged_catalog_extracts_nothing_and_warm_starts(served, trained):
    config = served.config
    _, result = start_and_wait("nightly", {"config_path": str(config)})
    assert result.train.extract.new == 0 and result.train.extract.reused == 48
    assert result.train.manifest.lineage.parent_run == trained.run_id
    assert result.train.manifest.k == trained.manifest.k and result.warm_start
    assert result.train.manifest.promoted
    assert runs.latest_run_id(load_config(config).workspace) == result.train.run_id


@contextmanager
def webhook_listener() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP endpoint recording the bodies POSTed to it: (url, bodies)."""
    bodies: list[bytes] = []

    class Record(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    listener = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.server_address[1]}/hook", bodies
    finally:
        listener.shutdown()
        listener.server_close()


def create_example_automation(server: dict[str, str], url: str, tmp_path: Path) -> None:
    """deployments/nightly-not-promoted.yaml with a real webhook block, created through the
    Prefect CLI as its comment says."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="vasrch-test-hook", url=url, json_data={"text": "{{subject}}: {{body}}"}
    )
    block_id = block.save("vasrch-test-hook", overwrite=True)
    text = (REPO / "deployments" / "nightly-not-promoted.yaml").read_text()
    automation = tmp_path / "automation.yaml"
    automation.write_text(text.replace("REPLACE-WITH-YOUR-BLOCK-ID", str(block_id)))
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "automation", "create", "--from-file", str(automation)],
        env=server,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.server
@pytest.mark.slow  # a nightly through the API: about 21 s
def test_nightly_failing_its_gate_keeps_latest_and_records_the_reason(
    server, served, trained, tmp_path
):
    from prefect.deployments import run_deployment

    config, catalog = served.config, served.catalog
    workspace = load_config(config).workspace
    before = runs.latest_run_id(workspace)
    bad = catalog / "shoe" / "truncated.png"
    bad.write_bytes((catalog / "shoe" / "shoe_000.png").read_bytes()[:200])
    parameters = {
        "config_path": str(config),
        "overrides": {"nightly.gates.max_rejected_fraction": 0},
    }
    with webhook_listener() as (url, bodies):
        create_example_automation(server, url, tmp_path)
        try:
            flow_run = run_deployment(
                name="nightly/nightly", parameters=parameters, timeout=RUN_TIMEOUT, poll_interval=1
            )
        finally:
            bad.unlink()
        deadline = time.monotonic() + 60
        while not bodies and time.monotonic() < deadline:
            time.sleep(0.5)
    # the example automation notified, with the gate's reason
    assert bodies and b"max_rejected_fraction 0" in bodies[0], bodies
    # The UI shows it red, with the gate's reason: automations and notifications can fire.
    assert flow_run.state.is_failed(), flow_run.state.name
    assert flow_run.name.startswith(f"nightly-{catalog.name}-"), flow_run.name
    message = flow_run.state.message
    assert "1 of 49" in message and "max_rejected_fraction 0" in message
    newest = runs.list_runs(workspace)[-1]
    assert runs.latest_run_id(workspace) == before != newest["run_id"]
    recorded = runs.read_manifest(runs.runs_dir(workspace) / newest["run_id"])
    assert recorded.status == "rejected" and recorded.reason in message
    assert flow_run.parameters["overrides"] == {"nightly.gates.max_rejected_fraction": 0}


def warm_service(workspace: Path, timeout: float = 120):
    """The workspace's query service once it serves LATEST (it starts after the first run, and
    reloads after each new one)."""
    from vasrch.query_jobs.service_client import ServiceUnusable, find_service

    deadline = time.monotonic() + timeout
    while True:
        try:
            return find_service(workspace, None, None)
        except ServiceUnusable as why:
            if time.monotonic() > deadline:
                pytest.fail(f"no warm query service after {timeout} s: {why}")
            time.sleep(0.5)


def flow_run_logs(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return "\n".join(log.message for log in logs)


def opened(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.mark.server
def test_query_through_the_api_is_answered_by_the_warm_service(served, trained, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    config, catalog = served.config, served.catalog
    workspace = load_config(config).workspace
    service = warm_service(workspace)
    queries = tmp_path / "queries"
    (queries / "sub").mkdir(parents=True)
    (queries / "hat.jpg").write_bytes(shopper_copy(catalog / "hat" / "hat_001.jpg"))
    (queries / "sub" / "watch.png").write_bytes(shopper_copy(catalog / "watch" / "watch_003.png"))
    (queries / "notes.txt").write_text("not an image and not an image name: skipped")
    (queries / "broken.jpg").write_bytes(b"not a jpeg")
    flow_run, result = start_and_wait(
        "query", {"config_path": str(config), "images": [str(queries)], "top_n": 4}
    )
    out = result.out_dir
    assert out.parent == workspace / "queries"
    assert result.run_id == runs.latest_run_id(workspace) == service.run_id
    assert result.queries == 2 and result.params.top_n == 4
    assert [r["query"] for r in result.rejected] == [str(queries / "broken.jpg")]
    deadline = time.monotonic() + 30
    while "answered by the query service" not in (logs := flow_run_logs(flow_run.id)):
        assert time.monotonic() < deadline, logs
        time.sleep(1)
    assert f"3 images answered by the query service at {service.url}" in logs
    table = pd.read_parquet(out / "results.parquet")
    assert list(table.columns) == ["query", "rank", "product_id", "score", "image_id", "category"]
    assert (
        len(table) == 8
        and table.groupby("query")["rank"].apply(list).tolist() == [[1, 2, 3, 4]] * 2
    )
    best = table[table["rank"] == 1].set_index("query")["image_id"]
    assert best[str(queries / "hat.jpg")] == "hat/hat_001.jpg"
    assert best[str(queries / "sub" / "watch.png")] == "watch/watch_003.png"
    page = (out / "results.html").read_text()
    assert "broken.jpg" in page and page.count('<figure class="tile query">') == 2
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 2 + 8 and all(s.startswith("thumbs/") for s in sources)
    assert all((out / s).is_file() for s in sources)

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert by_key["query-results"].type == "markdown" and "query-page" in by_key
    # the link opens: vasrch serve serves the workspace read-only
    url = re.search(r"\((http://[^)]+)\)", by_key["query-page"].data).group(1)
    assert url.endswith(f"/queries/{out.name}/results.html")
    assert opened(url) == (out / "results.html").read_bytes()
    # the results table: each query's 4 results with their scores, every image a link that opens
    markdown = by_key["query-results"].data
    assert f"embedded by the query service at {service.url}" in markdown
    rendered = render(markdown)
    queries_shown = [p for p in rendered.paragraphs if p.startswith("Query ")]
    assert queries_shown == ["Query hat.jpg · photo", "Query watch.png · photo"]
    hat, watch = rendered.tables
    for header, *rows in (hat, watch):
        assert header == ["rank", "product", "score"] and [r[0] for r in rows] == list("1234")
    score = table[(table["query"] == str(queries / "hat.jpg")) & (table["rank"] == 1)]["score"]
    assert hat[1] == ["1", "hat/hat_001.jpg", f"{score.iloc[0]:.4f}"]
    not_read = MarkdownIt().render(markdown.split("Not read (1):")[1])
    assert f"<li>{queries / 'broken.jpg'}: not an image" in not_read
    links = re.findall(r"\]\((http://[^)]+)\)", markdown)
    thumbs = {link for link in links if "/thumbs/" in link}
    assert len(thumbs) >= 2 + 4
    for link in thumbs:
        assert opened(link) == (out / "thumbs" / link.rsplit("/", 1)[1]).read_bytes()


@pytest.mark.server
def test_bulk_through_the_api_writes_neighbours_for_the_run(served, trained):
    config = served.config
    _, result = start_and_wait(
        "bulk", {"config_path": str(config), "run": trained.run_id, "top_n": 3}
    )
    out = result.out_dir
    assert result.run_id == trained.run_id and (out / "COMPLETE").is_file()
    assert result.summary.neighbour_rows == 48 * 3


@pytest.mark.server
def test_prefect_deploy_all_registers_the_yaml_deployments_and_a_worker_runs_them(
    server, served, trained, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    def prefect(*args: str, cwd: Path = REPO) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=cwd,
            env=server,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    stop(served.process)  # it would pick up runs of the same deployments too
    nightly = read_deployments()["nightly"]  # stopping vasrch serve leaves the schedule on
    assert not nightly.paused and all(s.active for s in nightly.schedules)
    prefect("work-pool", "create", "vasrch", "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML))
    deployments = read_deployments()
    assert sorted(deployments) == sorted(NAMES)
    for name, d in deployments.items():
        assert d.work_pool_name == "vasrch" and not d.paused
        module, function = ("products", "hide_products") if name == "hide-products" else (name,) * 2
        assert d.entrypoint == f"vasrch/orchestration/flows/{module}.py:{function}_flow"
        assert d.parameters == {"config_path": "config/demo.yaml"}
        assert d.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]
    [schedule] = deployments["nightly"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert "top_n" in refused("query", {"config_path": "c.yaml", "images": ["/q"], "top_n": 0})

    # A process worker started elsewhere runs a deployment from the repo root (its pull step).
    config = served.config
    parameters = {"config_path": str(config), "run": trained.run_id, "top_n": 2}
    flow_run = run_deployment(name="bulk/bulk", parameters=parameters, timeout=0)
    prefect("worker", "start", "--pool", "vasrch", "--run-once", cwd=tmp_path)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), f"{state.name}: {state.message}"
    jobs = load_config(config).workspace / "bulk" / trained.run_id
    assert any((job / "COMPLETE").is_file() for job in jobs.iterdir())
