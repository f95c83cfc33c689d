"""The query service on clothing-small: latency and throughput, a burst of big uploads with the
server's memory, a long run of requests, then warm in-process queries and index-only search.

1. A run trained on clothing-small/train (bulk off) is reused from `--workspace` when it has a
   LATEST run, else trained once with `vasrch train` (~3,000 images; minutes on a CPU).
2. Server: `vasrch query-server --quiet` runs in a child process on a free loopback port;
   1 and 4 client threads (keep-alive connections) POST one test-folder photo per request (raw
   JPEG body); p50/p95/p99 client-side latency and queries/s, after a warm-up. With
   `--baseline REV`, the server module of that git revision (the standard-library server before
   issue 11) is measured the same way, in the same conditions, just before. Then the model
   alone in this process, as many threads as the most clients, one image a call: the ceiling
   no server reaches on this machine at the load of the moment.
3. Burst: 16 clients at once, a quarter of their uploads big PNGs (half 9,400 x 9,400 = 88 MP,
   under the catalog's bomb limit but over the query limit; half 6,300 x 6,300 = 39.7 MP, just
   under it, so they are decoded); every status counted, the server's RSS sampled every 20 ms,
   and its RSS at rest before, and a minute after.
4. Soak: 10,000 requests from 8 clients (JPEG uploads, and one catalog-id query in ten): every
   status counted, queries/s.
5. In-process: the warm path a request takes (decode + embed one image, then search), p50/p95,
   and the search part alone; index only: one query against a synthetic 100k x 1280 index
   (k=100), probes 1 and 3, with OpenBLAS's default threads and with one BLAS thread.

    python benchmarks/bench_query_server.py --workspace /tmp/bench-ws --baseline 2072874
    python benchmarks/bench_query_server.py --sections latency burst --figures out.md
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.client
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WORKSPACE = ROOT / "bench-work" / "server" / "ws"  # ignored by git
FIGURES = ROOT / "bench-work" / "bench_server_figures.md"
WARMUP = 10
SECTIONS = ("latency", "burst", "soak", "in-process", "synthetic")
OK_IN_BURST = {200, 413, 503}

Request = tuple[str, str, bytes, str]  # method, path, body, content type


def ensure_run(workspace: Path, catalog: Path) -> str:
    """The LATEST run of `workspace`, training one on `catalog` first if there is none."""
    from vasrch.workspace.runs import latest_run_id

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


def service_command(workspace: Path) -> list[str]:
    """`vasrch query-server` as a shop would start it, access log off (it is timed, not read)."""
    return [
        sys.executable,
        "-m",
        "vasrch.cli",
        "query-server",
        "--workspace",
        str(workspace),
        "--quiet",
    ]


def start_server(cmd: list[str], timeout_s: float = 300) -> tuple[subprocess.Popen, int]:
    """`cmd` with `--port <free port>` in a child process, once it answers /health."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
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


def baseline_command(rev: str, workspace: Path, folder: Path) -> list[str]:
    """The standard-library server of git revision `rev` (vasrch/server.py), on this checkout's
    other modules."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:vasrch/server.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (folder / "baseline_server.py").write_text(source)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from baseline_server import run_query_server; "
        "run_query_server(Path(sys.argv[2]), port=int(sys.argv[sys.argv.index('--port') + 1]))"
    )
    return [sys.executable, "-c", code, str(folder), str(workspace)]


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used, all threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's RSS every `interval_s` in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_clients(
    port: int, plan: Callable[[int, int], Request], counts: list[int], record: bool = True
) -> tuple[list[float], collections.Counter, float]:
    """Client threads on keep-alive connections; client w sends counts[w] requests, the i-th
    being plan(w, i). Returns latencies (ms), statuses and the wall time."""
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def client(worker: int, count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, seen = [], collections.Counter()
        for i in range(count):
            method, path, body, ctype = plan(worker, i)
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body or None, headers={"Content-Type": ctype})
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as err:
                status = type(err).__name__
                conn.close()
            mine.append((time.perf_counter() - start) * 1000)
            seen[status] += 1
        conn.close()
        with lock:
            statuses.update(seen)
            if record:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(w, n)) for w, n in enumerate(counts)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, statuses, time.perf_counter() - start


def spread(total: int, clients: int) -> list[int]:
    return [total // clients + (w < total % clients) for w in range(clients)]


def jpeg_plan(images: list[bytes]) -> Callable[[int, int], Request]:
    def plan(worker: int, i: int) -> Request:
        return "POST", "/query", images[(worker * 7919 + i) % len(images)], "image/jpeg"

    return plan


def client_load(
    port: int, images: list[bytes], clients: int, requests: int, pid: int | None = None
) -> dict[str, float]:
    """`requests` JPEG POSTs spread over `clients` threads, after a warm-up; with the server's
    `pid`, also its CPU time per request (which other work on the machine does not inflate
    much, unlike latency)."""
    plan = jpeg_plan(images)
    run_clients(port, plan, [WARMUP] * clients, record=False)
    cpu = cpu_seconds(pid) if pid else 0.0
    latencies, statuses, wall = run_clients(port, plan, spread(requests, clients))
    cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / requests if pid else float("nan")
    if set(statuses) != {200}:
        raise RuntimeError(f"not every request succeeded: {dict(statuses)}")
    return {**percentiles(latencies), "qps": requests / wall, "n": requests, "cpu_ms": cpu_ms}


def big_png(side: int) -> bytes:
    """A side x side RGB PNG of smooth gradients: small on disk, huge decoded."""
    ramp = np.linspace(0, 255, side, dtype=np.float32).astype(np.uint8)
    pixels = np.empty((side, side, 3), np.uint8)
    pixels[..., 0] = ramp[:, None]
    pixels[..., 1] = ramp[None, :]
    pixels[..., 2] = 128
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def burst(
    pid: int, port: int, images: list[bytes], clients: int, per_client: int, settle_s: float
) -> dict[str, object]:
    """`clients` at once, every fourth upload a big PNG (alternately refused and decoded); the
    server's RSS at rest, at its peak during the burst, and `settle_s` after it."""
    refused, decoded = big_png(9400), big_png(6300)
    jpegs = jpeg_plan(images)

    def plan(worker: int, i: int) -> Request:
        n = worker * per_client + i
        if n % 4 == 0:
            return "POST", "/query", refused if n % 8 == 0 else decoded, "image/png"
        return jpegs(worker, i)

    time.sleep(2)
    rest = rss_kib(pid)
    with RssSampler(pid) as sampler:
        latencies, statuses, wall = run_clients(port, plan, [per_client] * clients)
    after_burst = rss_kib(pid)
    time.sleep(settle_s)
    settled = rss_kib(pid)
    return {
        "statuses": dict(statuses),
        "rest": rest,
        "peak": sampler.peak,
        "after_burst": after_burst,
        "settled": settled,
        "wall": wall,
        "sizes": (len(refused), len(decoded)),
        **percentiles(latencies),
    }


def soak(port: int, images: list[bytes], ids: list[str], clients: int, total: int) -> dict:
    """`total` requests from `clients` threads: JPEG uploads, and one catalog-id GET in ten."""
    jpegs = jpeg_plan(images)

    def plan(worker: int, i: int) -> Request:
        if i % 10 == 9:
            return "GET", f"/query?id={ids[(worker * 31 + i) % len(ids)]}", b"", "text/plain"
        return jpegs(worker, i)

    latencies, statuses, wall = run_clients(port, plan, spread(total, clients))
    return {"statuses": dict(statuses), "qps": total / wall, **percentiles(latencies)}


def model_ceiling(workspace: Path, threads: int, seconds: float = 10.0) -> float:
    """Images/s of the model alone (one pre-decoded image per call, `threads` threads, one BLAS
    thread, as the server runs it): what no server can beat on this machine at this load."""
    from threadpoolctl import threadpool_limits

    from vasrch.search.searcher import open_run

    backbone = open_run(workspace).backbone(batch_size=1)
    size = backbone.spec.input_size
    pixels = np.random.default_rng(0).integers(0, 255, (1, size, size, 3), dtype=np.uint8)
    for _ in range(WARMUP):
        backbone.embed(pixels)
    done = [0] * threads
    stop = time.monotonic() + seconds

    def work(worker: int) -> None:
        while time.monotonic() < stop:
            backbone.embed(pixels)
            done[worker] += 1

    with threadpool_limits(limits=1, user_api="blas"):
        workers = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    return sum(done) / seconds


def in_process(workspace: Path, images: list[bytes], count: int) -> dict[str, dict[str, float]]:
    """Warm single-image queries in this process: decode + embed + search, and search alone."""
    from vasrch.search.searcher import embed_files, open_run

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

    from vasrch.index.clustering import l2_normalise
    from vasrch.index.search_index import build_index

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


def int_or(status: int | str, default: int) -> int:
    """An HTTP status, or `default` for a client-side failure (named by its exception)."""
    return status if isinstance(status, int) else default


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def measure_latency(
    name: str, cmd: list[str], images: list[bytes], clients: list[int], requests: int
) -> list[str]:
    proc, port = start_server(cmd)
    lines = []
    try:
        for n in clients:
            start_load = load()
            r = client_load(port, images, n, requests, proc.pid)
            note = (
                f"{r['qps']:.1f} queries/s, server CPU {r['cpu_ms']:.1f} ms/query, {r['n']} "
                f"requests; load {start_load}-{load()}"
            )
            lines.append(row(f"{name}, POST one image, {n} client(s)", r, note))
            print(lines[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workspace", type=Path, default=WORKSPACE)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--requests", type=int, default=200, help="timed requests per setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--baseline", metavar="REV", help="also measure vasrch/server.py of REV")
    parser.add_argument("--burst-clients", type=int, default=16)
    parser.add_argument("--burst-requests", type=int, default=8, help="per burst client")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the burst")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    parser.add_argument("--soak-clients", type=int, default=8)
    parser.add_argument("--in-process", type=int, default=200, help="timed in-process queries")
    parser.add_argument("--synthetic-n", type=int, default=100_000)
    parser.add_argument("--figures", type=Path, default=FIGURES, help="markdown file to write")
    args = parser.parse_args()

    if not (args.dataset / "train").is_dir():
        raise SystemExit(f"{args.dataset}/train not found; pass --dataset")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run_id = ensure_run(args.workspace, args.dataset / "train")
    from vasrch.search.searcher import open_run

    index = open_run(args.workspace).index
    photos = sorted((args.dataset / "test").rglob("*.jpg"))
    images = [p.read_bytes() for p in photos]
    command = "python " + " ".join(
        [str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]]
    )
    print(f"$ {command}")
    print(f"run {run_id}: {index.n} images, k={index.k}; {len(images)} test photos as queries")

    lines = [
        f"## Query service ({dt.date.today()}, `{command}`)",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load()} at start (shared machine); run {run_id} on clothing-small/train "
        f"({index.n} images, k={index.k}, EfficientNet-Lite0); queries are the "
        f"{len(images)} test-folder JPEGs. Latencies in ms, client side, over loopback.",
        "",
        "| measurement | p50 | p95 | p99 | notes |",
        "|---|---|---|---|---|",
    ]
    service = service_command(args.workspace)
    if "latency" in args.sections:
        if args.baseline:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = baseline_command(args.baseline, args.workspace, Path(tmp))
                lines += measure_latency(
                    f"stdlib server of {args.baseline}", cmd, images, args.clients, args.requests
                )
        lines += measure_latency("service", service, images, args.clients, args.requests)
        threads, start_load = max(args.clients), load()
        ceiling = model_ceiling(args.workspace, threads)
        lines.append(
            f"| model alone, {threads} threads, one image a call | | | | {ceiling:.1f} images/s "
            f"(the ceiling at this load); load {start_load}-{load()} |"
        )
        print(lines[-1], flush=True)

    notes = []
    if "burst" in args.sections or "soak" in args.sections:
        proc, port = start_server(service)
        try:
            if "burst" in args.sections:
                client_load(port, images, 1, WARMUP)
                start_load = load()
                b = burst(
                    proc.pid, port, images, args.burst_clients, args.burst_requests, args.settle
                )
                bad = {s: n for s, n in b["statuses"].items() if s not in OK_IN_BURST}
                lines.append(
                    row(
                        f"burst: {args.burst_clients} clients x {args.burst_requests}, "
                        "1 in 4 a big PNG",
                        b,
                        f"statuses {b['statuses']}; RSS rest {mib(b['rest'])}, peak "
                        f"{mib(b['peak'])}, {args.settle:g} s after {mib(b['settled'])} "
                        f"({b['settled'] / b['rest'] - 1:+.1%}); load {start_load}-{load()}",
                    )
                )
                print(lines[-1], flush=True)
                notes.append(
                    f"Burst PNGs: 9,400 x 9,400 ({b['sizes'][0]:,} bytes, refused: 413) and "
                    f"6,300 x 6,300 ({b['sizes'][1]:,} bytes, decoded); other statuses than "
                    f"200/413/503: {bad or 'none'}; RSS right after the burst "
                    f"{mib(b['after_burst'])}."
                )
            if "soak" in args.sections:
                start_load = load()
                ids = [str(i) for i in index.ids[:: max(1, index.n // 500)]]
                s = soak(port, images, ids, args.soak_clients, args.soak_requests)
                failed = sum(
                    n for st, n in s["statuses"].items() if not (200 <= int_or(st, 500) < 500)
                )
                lines.append(
                    row(
                        f"soak: {args.soak_requests:,} requests, {args.soak_clients} clients",
                        s,
                        f"{s['qps']:.1f} queries/s; statuses {s['statuses']} "
                        f"({failed} 5xx or failed); load {start_load}-{load()}",
                    )
                )
                print(lines[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    if "in-process" in args.sections:
        warm = in_process(args.workspace, images, args.in_process)
        lines.append(row("in-process warm query (decode + embed + search)", warm["total"]))
        lines.append(row("  of which search", warm["search"]))
        print("\n".join(lines[-2:]), flush=True)

    if "synthetic" in args.sections:
        synthetic = synthetic_index_search(args.synthetic_n, 1280, 100, 200)
        for (probes, blas), p in synthetic.items():
            threads = "default BLAS threads" if blas is None else "1 BLAS thread (as the server)"
            name = f"index only, {args.synthetic_n:,} x 1280, k=100, probes {probes}"
            lines.append(row(name, p, f"synthetic, {threads}"))
            print(lines[-1], flush=True)

    lines += ["", *notes, f"Load average at the end: {load()}."]
    args.figures.parent.mkdir(parents=True, exist_ok=True)
    from vasrch.atomic_files import write_text_atomic

    write_text_atomic(args.figures, "\n".join(lines) + "\n")
    print(f"figures written to {args.figures}")


if __name__ == "__main__":
    main()
