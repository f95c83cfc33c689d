"""Query latency on clothing-small: the query server over loopback, warm in-process queries, and
index-only search on a synthetic 100k x 1280 index.

1. A run trained on clothing-small/train (bulk off) is reused from `--workspace` when it has a
   LATEST run, else trained once with `vasrch train` (~3,000 images; minutes on a CPU).
2. Server: `run_query_server` runs in a child process on a free loopback port; 1 and 4 client
   threads (keep-alive connections) POST one test-folder photo per request (raw JPEG body);
   p50/p95/p99 client-side latency and queries/s, after a warm-up.
3. In-process: the warm path a request takes (decode + embed one image, then search), p50/p95,
   and the search part alone.
4. Index only: one query against a synthetic 100k x 1280 index (k=100 clusters of a Gaussian
   mixture, unit vectors), p50/p95 for probes 1 and 3, with OpenBLAS's default threads and
   with one BLAS thread (as the server runs).

    python benchmarks/bench_query_server.py
    python benchmarks/bench_query_server.py --requests 400 --clients 1 2 4 --figures out.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WORKSPACE = ROOT.parent / "helpers" / "server" / "ws"
FIGURES = ROOT.parent / "helpers" / "bench_server_figures.md"
WARMUP = 10


def ensure_run(workspace: Path, catalog: Path) -> str:
    """The LATEST run of `workspace`, training one on `catalog` first if there is none."""
    from vasrch.runs import latest_run_id

    if latest_run_id(workspace) is None:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "catalog": {"path": str(catalog)},
                        "workspace": str(workspace),
                        "bulk": {"enabled": False},
                    }
                )
            )
            print(f"training a run on {catalog} into {workspace} (once; minutes) ...", flush=True)
            env = {**os.environ, "PREFECT_HOME": str(Path(tmp) / "prefect")}
            cmd = [sys.executable, "-m", "vasrch.cli", "run", str(config), "--no-progress"]
            subprocess.run(cmd, check=True, env=env)
    return str(latest_run_id(workspace))


def percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(ms), [50, 95, 99])
    return {"p50": p50, "p95": p95, "p99": p99}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workspace: Path, timeout_s: float = 300) -> tuple[subprocess.Popen, int]:
    """`run_query_server` (what `vasrch query-server` runs) in a child process, once healthy."""
    port = free_port()
    code = (
        "import sys; from pathlib import Path; from vasrch.server import run_query_server; "
        "run_query_server(Path(sys.argv[1]), port=int(sys.argv[2]))"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(workspace), str(port)], env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
        finally:
            conn.close()
    proc.kill()
    raise RuntimeError(f"the query server did not answer /health on port {port}")


def client_load(port: int, images: list[bytes], clients: int, requests: int) -> dict[str, float]:
    """`requests` POSTs spread over `clients` threads, each on its own keep-alive connection."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(worker: int, count: int, record: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for i in range(count):
            body = images[(worker * 7919 + i) % len(images)]
            start = time.perf_counter()
            conn.request("POST", "/query", body=body, headers={"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            payload = response.read()
            mine.append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                with lock:
                    errors.append(f"{response.status}: {json.loads(payload)['error']}")
        conn.close()
        if record:
            with lock:
                latencies.extend(mine)

    def run(count_of: list[int], record: bool) -> float:
        threads = [
            threading.Thread(target=client, args=(w, n, record)) for w, n in enumerate(count_of)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    run([WARMUP] * clients, record=False)
    counts = [requests // clients + (w < requests % clients) for w in range(clients)]
    wall = run(counts, record=True)
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {**percentiles(latencies), "qps": requests / wall, "n": requests}


def in_process(workspace: Path, images: list[bytes], count: int) -> dict[str, dict[str, float]]:
    """Warm single-image queries in this process: decode + embed + search, and search alone."""
    from vasrch.search import embed_files, open_run

    searcher = open_run(workspace)
    backbone = searcher.backbone(batch_size=1)
    total, search = [], []
    for i in range(WARMUP + count):
        start = time.perf_counter()
        vectors, _, bad = embed_files([images[i % len(images)]], backbone)
        middle = time.perf_counter()
        searcher.search_vectors(vectors, top_n=10, probes=3)
        end = time.perf_counter()
        if bad:
            raise RuntimeError(f"test image {i % len(images)} did not decode: {bad[0][1]}")
        if i >= WARMUP:
            total.append((end - start) * 1000)
            search.append((end - middle) * 1000)
    return {"total": percentiles(total), "search": percentiles(search)}


def synthetic_index_search(
    n: int, dim: int, k: int, count: int
) -> dict[tuple[int, int | None], dict[str, float]]:
    """One query at a time against n unit vectors of a k-component mixture, k IVF clusters;
    keyed by (probes, BLAS threads: None = OpenBLAS's default, 1 = as the server runs)."""
    from threadpoolctl import threadpool_limits

    from vasrch.clustering import l2_normalise
    from vasrch.index import build_index

    rng = np.random.default_rng(0)
    means = l2_normalise(rng.standard_normal((k, dim), dtype=np.float32))
    labels = rng.integers(k, size=n + count)
    x = np.empty((n + count, dim), dtype=np.float32)
    for start in range(0, n + count, 20_000):
        stop = min(n + count, start + 20_000)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        x[start:stop] = l2_normalise(means[labels[start:stop]] + 0.04 * noise)
    queries, x = x[n:], x[:n]
    assigned = np.argmax(x @ means.T, axis=1)
    ids = np.array([f"s{i:06d}" for i in range(n)], dtype=object)
    index = build_index(ids, x, means, assigned, "synthetic")
    del x
    out = {}
    for probes in (1, 3):
        for blas in (None, 1):
            with threadpool_limits(limits=blas, user_api="blas"):
                ms = []
                for i in range(WARMUP + count):
                    start = time.perf_counter()
                    index.search(queries[i % count], top_n=10, probes=probes)
                    if i >= WARMUP:
                        ms.append((time.perf_counter() - start) * 1000)
            out[probes, blas] = percentiles(ms)
    return out


def row(name: str, p: dict[str, float], extra: str = "") -> str:
    cells = [f"{p['p50']:.1f}", f"{p['p95']:.1f}", f"{p['p99']:.1f}" if "p99" in p else ""]
    return f"| {name} | {' | '.join(cells)} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workspace", type=Path, default=WORKSPACE)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--in-process", type=int, default=200, help="timed in-process queries")
    parser.add_argument("--synthetic-n", type=int, default=100_000)
    parser.add_argument("--figures", type=Path, default=FIGURES, help="markdown file to write")
    args = parser.parse_args()

    if not (args.dataset / "train").is_dir():
        raise SystemExit(f"{args.dataset}/train not found; pass --dataset")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run_id = ensure_run(args.workspace, args.dataset / "train")
    from vasrch.search import open_run

    index = open_run(args.workspace).index
    photos = sorted((args.dataset / "test").rglob("*.jpg"))
    images = [p.read_bytes() for p in photos]
    load = os.getloadavg()
    command = "python " + " ".join(
        [str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]]
    )
    print(f"$ {command}")
    print(f"run {run_id}: {index.n} images, k={index.k}; {len(images)} test photos as queries")

    lines = [
        f"## Query server ({dt.date.today()}, `{command}`)",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} at start (shared machine); run {run_id} on clothing-small/train "
        f"({index.n} images, k={index.k}, EfficientNet-Lite0), probes 3, top 10; queries are the "
        f"{len(images)} test-folder JPEGs. Latencies in ms.",
        "",
        "| measurement | p50 | p95 | p99 | notes |",
        "|---|---|---|---|---|",
    ]
    proc, port = start_server(args.workspace)
    try:
        for clients in args.clients:
            r = client_load(port, images, clients, args.requests)
            note = f"{r['qps']:.1f} queries/s, {r['n']} requests over loopback"
            lines.append(row(f"server, POST one image, {clients} client(s)", r, note))
            print(lines[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    warm = in_process(args.workspace, images, args.in_process)
    lines.append(row("in-process warm query (decode + embed + search)", warm["total"]))
    lines.append(row("  of which search", warm["search"]))
    print("\n".join(lines[-2:]), flush=True)

    synthetic = synthetic_index_search(args.synthetic_n, 1280, 100, 200)
    for (probes, blas), p in synthetic.items():
        threads = "default BLAS threads" if blas is None else "1 BLAS thread (as the server)"
        name = f"index only, {args.synthetic_n:,} x 1280, k=100, probes {probes}"
        lines.append(row(name, p, f"synthetic, {threads}"))
        print(lines[-1], flush=True)

    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    args.figures.parent.mkdir(parents=True, exist_ok=True)
    from vasrch.fileio import write_text_atomic

    write_text_atomic(args.figures, "\n".join(lines) + "\n")
    print(f"figures written to {args.figures}")


if __name__ == "__main__":
    main()
