"""The query flow as the Prefect UI starts it, served by `vasrch serve --with-query-service`
(issue 15): how long a query run of one image takes from its creation to Completed, and its own
run time; and how fast a folder of images is scored by the flow, by the warm service, and by
`vasrch query`. Needs a trained run for CONFIG; starts its own Prefect server (fresh
PREFECT_HOME, a free port) and `vasrch serve` in child processes.

    python benchmarks/bench_query_flow.py --config CONFIG [--runs 10] [--batch FOLDER]
        [--repeat 2] [--without-service]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise SystemExit(f"{what}: not ready after {timeout} s")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run_query(parameters: dict[str, Any]) -> dict[str, float | str]:
    """Create a query run as the UI does, wait for it; its timings from the server's records."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    created = run_deployment("query/query", parameters=parameters, timeout=0)
    with get_client(sync_client=True) as client:
        while not (run := client.read_flow_run(created.id)).state.is_final():
            time.sleep(0.05)
    if not run.state.is_completed():
        raise SystemExit(f"query run {run.name}: {run.state.name} {run.state.message}")
    return {
        "to_completed": (run.end_time - run.created).total_seconds(),
        "to_start": (run.start_time - run.created).total_seconds(),
        "run_time": (run.end_time - run.start_time).total_seconds(),
        "path": path_taken(run.id),
    }


def path_taken(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    for _ in range(40):
        with get_client(sync_client=True) as client:
            for log in client.read_logs(log_filter=log_filter):
                if "answered by" in log.message or "embedding the" in log.message:
                    return "service" if "answered by" in log.message else "local"
        time.sleep(0.25)
    return "?"


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} s "
        f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
    )


def latency(config: str, image: str, runs: int) -> None:
    got = [run_query({"config_path": config, "images": [image]}) for _ in range(runs)]
    print(f"one image, {runs} runs, paths taken: {sorted({str(g['path']) for g in got})}")
    for key, what in [
        ("to_completed", "creation -> Completed"),
        ("to_start", "creation -> Running"),
        ("run_time", "run time (Running -> Completed)"),
    ]:
        print(f"  {what}: {summary([float(g[key]) for g in got])}")
    print(f"  load average {load()}")


def batch(config: str, folder: Path, repeat: int) -> None:
    from vasrch.config import load_config
    from vasrch.query_jobs.job import query_files, search_files, write_query_job
    from vasrch.query_jobs.service_client import find_service, search_served
    from vasrch.search.searcher import open_run

    cfg = load_config(config)
    files = query_files([str(folder)])
    n = len(files)
    print(f"folder of {n} images ({folder}):")

    cmd = [sys.executable, "-m", "vasrch.cli", "query", str(folder), "-c", config, "--format"]
    for _ in range(repeat):  # alternated, so that both meet the same machine load
        start = time.perf_counter()
        subprocess.run([*cmd, "csv"], check=True, capture_output=True)
        wall = time.perf_counter() - start
        print(f"  `vasrch query FOLDER` (cold process): {wall:.1f} s, {n / wall:.1f} images/s")
        print(f"    load average {load()}")
        got = run_query({"config_path": config, "images": [str(folder)]})
        run_time = float(got["run_time"])
        print(
            f"  query flow run ({got['path']}): run time {run_time:.1f} s, {n / run_time:.1f} "
            f"images/s; creation -> Completed {float(got['to_completed']):.1f} s"
        )
        print(f"    load average {load()}")

    service = find_service(cfg.workspace, None, None)
    params = service.params(cfg.search, None, None)
    start = time.perf_counter()
    served = search_served(service, files, params)
    took = time.perf_counter() - start
    print(f"  the warm service, {n} requests: {took:.1f} s, {n / took:.1f} images/s")
    print(f"    load average {load()}")

    start = time.perf_counter()
    searcher = open_run(cfg.workspace, search=cfg.search)
    searcher.backbone(cfg.features.batch_size, cfg.features.device)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    search_files(searcher, files, params, cfg.features)
    took = time.perf_counter() - start
    print(
        f"  embedded in-process: TensorFlow + run + model {loaded:.1f} s, then {took:.1f} s, "
        f"{n / took:.1f} images/s"
    )
    print(f"    load average {load()}")
    start = time.perf_counter()
    write_query_job(cfg.workspace, served, "benchmark")
    took = time.perf_counter() - start
    print(f"  writing results.parquet + results.html (thumbnails): {took:.1f} s")
    print(f"    load average {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", help="query image (default: the run's first catalog image)")
    parser.add_argument("--batch", type=Path, help="a folder of query images to score")
    parser.add_argument("--repeat", type=int, default=2, help="CLI and flow runs of the folder")
    parser.add_argument(
        "--without-service", action="store_true", help="serve without --with-query-service"
    )
    args = parser.parse_args()
    config = str(Path(args.config).resolve())
    os.environ.update(QUIET)

    from vasrch.config import load_config
    from vasrch.workspace.runs import resolve_run

    workspace = load_config(config).workspace
    import pandas as pd

    catalog = pd.read_parquet(resolve_run(workspace) / "catalog.parquet", columns=["path"])
    image = args.image or str(catalog["path"].iloc[0])

    home = Path(tempfile.mkdtemp(prefix="bench-query-flow-"))
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server_env = {**env, "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    server_env["PREFECT_SERVER_API_PORT"] = str(port)
    api = f"http://127.0.0.1:{port}/api"
    procs = [start([sys.executable, "-m", "prefect", "server", "start"], server_env, home / "s")]
    try:
        wait(lambda: answers(f"{api}/health"), 180, "prefect server")
        os.environ["PREFECT_API_URL"] = api
        serve = [sys.executable, "-m", "vasrch.cli", "serve", config, "--files-port", "0"]
        if not args.without_service:
            serve += ["--with-query-service", "--query-port", "0"]
        procs.append(start(serve, {**env, "PREFECT_API_URL": api}, home / "serve.log"))
        from prefect.client.orchestration import get_client

        def registered() -> bool:
            with get_client(sync_client=True) as client:
                return len(client.read_deployments()) == 4

        wait(registered, 120, "vasrch serve")
        if not args.without_service:
            from vasrch.query_jobs.service_client import ServiceUnusable, find_service

            def warm() -> bool:
                try:
                    return bool(find_service(workspace, None, None))
                except ServiceUnusable:
                    return False

            wait(warm, 180, "query service")
        flags = "without a query service" if args.without_service else "--with-query-service"
        print(f"$ python benchmarks/bench_query_flow.py {' '.join(sys.argv[1:])}")
        print(f"vasrch serve {flags}, polling every 1 s; {os.cpu_count()} cores")
        run_query({"config_path": config, "images": [image]})  # first run: warms the process
        latency(config, image, args.runs)
        if args.batch:
            batch(config, args.batch, args.repeat)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
