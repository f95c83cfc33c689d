"""The query service on a workspace in object storage (SeaweedFS behind a fault-injecting
proxy): it serves the store's LATEST from its local cache, keeps serving while the store is
unreachable, and follows LATEST when the store is back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.service_helpers import catalog_image, free_port, request, serving, upload
from tests.store_proxy import fault_proxy
from tests.workspace_stores import make_run, new_store
from vasrch.workspace import runs
from vasrch.workspace.hidden import hide
from vasrch.workspace.remote_runs import publish_run, read_latest
from vasrch.workspace.run_manifest import RunRecord

WAIT_S = 60


def copy_as_new_run(run_folder: Path, workspace: Path) -> Path:
    """The same run's files completed again under a new run id in `workspace`."""
    manifest = runs.read_manifest(run_folder)
    staging = runs.start_run(workspace, runs.new_run_id())
    for path in run_folder.rglob("*"):
        rel = path.relative_to(run_folder)
        if path.is_file() and rel.as_posix() != "manifest.json":
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / rel)
    record = RunRecord(**{name: getattr(manifest, name) for name in RunRecord.model_fields})
    return runs.complete_run(staging, record, parent_run=manifest.run_id)


def health(server) -> dict:
    status, body = request(server, "GET", "/health")
    assert status == 200
    return body


def products(answer: tuple[int, dict]) -> list[str]:
    assert answer[0] == 200, answer
    return [row["product_id"] for row in answer[1]["results"]]


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.2)


def vasrch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vasrch.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_cli_reads_runs_from_the_store_and_its_cache_when_unreachable(store, tmp_path):
    published = make_run(tmp_path / "writer")
    publish_run(store, published, read_latest(store))
    endpoint = store.storage_options["client_kwargs"]["endpoint_url"]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "vasrch-test",
        "AWS_SECRET_ACCESS_KEY": "vasrch-test",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    shown = vasrch("runs", "show", "--workspace", store.url, env=env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    manifest, _ = json.JSONDecoder().raw_decode(shown.stdout)
    assert manifest["run_id"] == published.name and "artifacts verified" in shown.stdout

    down = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    cached = vasrch("runs", "show", "--workspace", store.url, env=down)
    assert cached.returncode == 0, cached.stderr[-2000:]
    assert "warning: using the cached runs in" in cached.stderr
    assert cached.stdout == shown.stdout

    refused = vasrch("runs", "promote", published.name, "--workspace", store.url, env=env)
    assert refused.returncode == 2 and "object storage" in refused.stderr


@pytest.mark.slow  # about 35 s beyond the shared served workspace on 2 busy cores
def test_serves_the_stores_latest_and_rides_out_an_outage(
    object_store, bucket, served_workspace, demo_catalog, tmp_path
):
    writer = tmp_path / "writer"
    first = copy_as_new_run(runs.resolve_run(served_workspace), writer)
    with fault_proxy(object_store.endpoint) as proxy:
        store = new_store(proxy.endpoint, bucket, retries=1)
        publish_run(store, first, read_latest(store))
        options = {
            "workspace_url": store.url,
            "workspace_storage_options": dict(store.storage_options),
            "reload_interval_s": 0.2,
        }
        with serving(tmp_path / "cache", **options) as server:
            assert health(server)["run_id"] == first.name
            proxy.down = True
            wait_for(lambda: health(server)["store_error"], "store error reported")
            answer = upload(server, catalog_image(demo_catalog, "hat/hat_001.jpg"))
            assert answer[0] == 200 and health(server)["run_id"] == first.name

            proxy.down = False
            second = copy_as_new_run(first, writer)
            publish_run(store, second, read_latest(store))
            wait_for(lambda: health(server)["run_id"] == second.name, "new run served")
            assert health(server)["store_error"] is None

            # another machine hides the best answer's product on the store: the service's next
            # check copies the record and its answers leave the product out
            photo = catalog_image(demo_catalog, "hat/hat_001.jpg")
            best = upload(server, photo)[1]["results"][0]["product_id"]
            hide(tmp_path / "other-machine", [best], by="test", store=store)
            wait_for(lambda: best not in products(upload(server, photo)), "hidden product gone")
    assert runs.latest_run_id(tmp_path / "cache") == second.name
