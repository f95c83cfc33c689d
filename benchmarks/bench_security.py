"""Hostile inputs of issue 19 (target: each is refused or folded at once, the service's memory
stays flat and its /health keeps answering in milliseconds).

A run of the demo catalog is trained with `vasrch train` (or reused from `--keep FOLDER`), then
`vasrch query-server` runs in a child process on a free loopback port, its access log going to
a file. Each service attack runs from a few client threads while one more thread probes
`/health` every 20 ms and another samples the server's RSS every 20 ms; a line gives the
statuses the attack got, its wall time, /health's p50/p95/max while it ran, and the server's
RSS before, at peak and after. The attacks:

- multipart: 10 MB bodies of 200,000 tiny form parts (4 clients x 3);
- methods: 2,000 requests with random method tokens, then the size of /metrics;
- filters: JSON bodies with 1,000,000 filter values (4 clients x 2), then 2,000 queries each
  with a different filter value (the mask cache's churn);
- log paths: 500 requests whose decoded paths hold newlines, CR and ESC (then: the log's lines
  per request, and whether any raw control character reached it);
- scan bomb: a progressive JPEG of 5,000 scans (4 clients x 3).

The catalog and workspace inputs fixed on main run in this process, each timed with its outcome:
a manifest row with a NUL byte, a planted `.lock` symlink, product titles holding rich markup.

    python benchmarks/bench_security.py
    python benchmarks/bench_security.py --keep /tmp/bench-security
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ builds the scan bomb

from tests.test_hostile_inputs import scan_bomb  # noqa: E402

PROBE_S = 0.02
TIMEOUT_S = 120  # a request (or /health probe) not answered by then counts as failed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--keep", type=Path, help="folder whose trained demo workspace is reused (made if absent)"
    )
    return p.parse_args()


def trained_workspace(folder: Path) -> Path:
    """A workspace with a LATEST run of the demo catalog (8 classes x 6), trained unless there."""
    from vasrch.catalog.demo import generate_demo_catalog

    workspace = folder / "ws"
    if (workspace / "runs" / "LATEST").is_file():
        return workspace
    generate_demo_catalog(folder / "catalog", per_class=6)
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"path": str(folder / "catalog")},
                "workspace": str(workspace),
                "features": {"shard_size": 16},
                "clustering": {"diagnostics": {"k_min": 2, "k_max": 6}},
                "evaluation": {"sample": 16},
                "bulk": {"enabled": False},
            }
        )
    )
    vasrch = [sys.executable, "-m", "vasrch.cli"]
    subprocess.run([*vasrch, "train", str(config), "--no-progress"], check=True)
    return workspace


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(
    port: int, method: str, path: str, body: bytes | None = None, ctype: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@dataclass
class Watch:
    """/health latencies and the server's RSS, sampled while an attack runs."""

    port: int
    pid: int
    health_ms: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _probe(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                ok = call(self.port, "GET", "/health")[0] == 200
            except OSError:
                ok = False
            self.health_ms.append((time.perf_counter() - start) * 1000)
            self.failures += not ok
            self._stop.wait(PROBE_S)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_mib(self.pid))
            self._stop.wait(PROBE_S)

    @contextmanager
    def running(self) -> Iterator[Watch]:
        threads = [threading.Thread(target=f) for f in (self._probe, self._sample)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()


def attack(
    port: int, pid: int, label: str, clients: int, jobs: list[Callable[[], int]]
) -> dict[str, object]:
    """Run `jobs` (each returns a status) on `clients` threads under a Watch; one result line."""
    before = rss_mib(pid)
    statuses: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    pending = list(jobs)

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop()
            try:
                status = str(job())
            except OSError as err:  # a timeout or a reset: the service stalled or gave up
                status = type(err).__name__
            with lock:
                statuses[status] += 1

    with Watch(port, pid).running() as watch:
        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
    time.sleep(0.5)
    health = np.array(watch.health_ms or [float("nan")])
    return {
        "attack": label,
        "requests": len(jobs),
        "statuses": dict(sorted(statuses.items())),
        "wall_s": round(seconds, 2),
        "health_probes": len(watch.health_ms),
        "health_failed": watch.failures,
        "health_p50_ms": round(float(np.percentile(health, 50)), 1),
        "health_p95_ms": round(float(np.percentile(health, 95)), 1),
        "health_max_ms": round(float(health.max()), 1),
        "rss_before_mib": round(before),
        "rss_peak_mib": round(max([before, *watch.rss])),
        "rss_after_mib": round(rss_mib(pid)),
    }


def multipart_bomb(size: int = 9_900_000) -> tuple[bytes, str]:
    boundary = "b"
    part = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n'
    return part * (size // len(part)) + b"--b--\r\n", f"multipart/form-data; boundary={boundary}"


def service_attacks(port: int, pid: int, log: Path) -> list[dict[str, object]]:
    rows = [attack(port, pid, "idle (baseline)", 1, [lambda: time.sleep(3) or 200])]
    body, ctype = multipart_bomb()
    rows.append(
        attack(port, pid, "multipart 200k parts", 4, [lambda: post(port, body, ctype)] * 12)
    )
    methods = [f"X{secrets.token_hex(8).upper()}" for _ in range(2000)]
    rows.append(
        attack(
            port,
            pid,
            "random methods",
            4,
            [lambda m=m: call(port, m, "/query")[0] for m in methods],
        )
    )
    rows[-1]["metrics_bytes"] = len(call(port, "GET", "/metrics")[1])
    huge = json.dumps({"image_base64": "AA==", "filters": {"category": ["v"] * 1_000_000}})
    rows.append(
        attack(
            port,
            pid,
            "1M filter values",
            4,
            [lambda: post(port, huge.encode(), "application/json")] * 8,
        )
    )
    churn = [f"/query?id=hat/hat_001.jpg&top_n=3&filter.category=c{i}" for i in range(2000)]
    rows.append(
        attack(
            port,
            pid,
            "2,000 distinct filters",
            4,
            [lambda p=p: call(port, "GET", p)[0] for p in churn],
        )
    )
    lines_before = log.read_bytes().count(b"\n")
    forged = "/x%0aGET%20/query%20200%201.0%20ms%20127.0.0.1:1%0d%1b[2J%1b]8;;http://e.x%1b%5c"
    rows.append(
        attack(port, pid, "log-forging paths", 4, [lambda: call(port, "GET", forged)[0]] * 500)
    )
    time.sleep(1)
    written = log.read_bytes()[-(1 << 20) :].split(b"\n")
    rows[-1]["log_lines_per_request"] = round(
        (log.read_bytes().count(b"\n") - lines_before) / 500, 2
    )
    rows[-1]["raw_control_chars_in_log"] = any(
        c in line for line in written for c in (b"\x1b", b"\r")
    )
    bomb = scan_bomb(5000)
    rows.append(
        attack(port, pid, "JPEG of 5,000 scans", 4, [lambda: post(port, bomb, "image/jpeg")] * 12)
    )
    return rows


def post(port: int, body: bytes, ctype: str) -> int:
    return call(port, "POST", "/query", body, ctype)[0]


def timed(label: str, run: Callable[[], str]) -> dict[str, object]:
    start = time.perf_counter()
    outcome = run()
    return {
        "attack": label,
        "ms": round((time.perf_counter() - start) * 1000, 1),
        "outcome": outcome,
    }


def nul_manifest_row(tmp: Path) -> str:
    from PIL import Image

    from vasrch.catalog.scan import ScanOptions, scan_catalog

    folder = tmp / "nul"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 64), (9, 99, 199)).save(folder / name)
    manifest = folder / "products.csv"
    manifest.write_text('product_id,image,title\nA,a.jpg,x\nB,"b\x00.jpg",y\nC,b.jpg,z\n')
    scan = scan_catalog(folder, options=ScanOptions(manifest=manifest))
    return f"{len(scan.table)} photos kept; rejected: {'; '.join(scan.rejected['reason'])}"


def lock_symlink(tmp: Path) -> str:
    from vasrch.workspace.lock import WorkspaceBusy, workspace_lock

    target = tmp / "precious.txt"
    target.write_text("keep me")
    workspace = tmp / "lock-ws"
    workspace.mkdir()
    (workspace / ".lock").symlink_to(target)
    try:
        with workspace_lock(workspace, "bench"):
            refused = "taken"
    except WorkspaceBusy as err:
        refused = f"refused ({str(err)[:60]}...)"
    return f"lock {refused}; target {'unchanged' if target.read_text() == 'keep me' else 'CHANGED'}"


def markup_titles() -> str:
    from rich.console import Console

    from vasrch.cli.output import print_table

    titles = ["Shorts [/sale]", "[link=https://evil.example]Free shoes[/link]", "[bold]LOUD[/]"]
    rows = [{"rank": i + 1, "product_id": f"P{i}", "title": t} for i, t in enumerate(titles)]
    out = io.StringIO()
    with redirect_stdout(out):
        print_table(rows, console=Console(file=out, width=200, color_system=None))
    printed = sum(t in out.getvalue() for t in titles)
    return f"{printed}/{len(titles)} titles printed literally, no MarkupError"


def print_rows(rows: list[dict[str, object]]) -> None:
    for row in rows:
        print("  " + json.dumps(row))


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="vasrch-security-") as name:
        tmp = Path(name)
        workspace = trained_workspace(args.keep or tmp)
        port = free_port()
        log = tmp / "service.log"
        command = [sys.executable, "-m", "vasrch.cli", "query-server", "--workspace"]
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [*command, str(workspace), "--port", str(port)], stdout=sink, stderr=sink
            )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if call(port, "GET", "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"the service did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            print(f"load average {os.getloadavg()[0]:.1f}; service pid {server.pid}")
            print("service attacks:")
            print_rows(service_attacks(port, server.pid, log))
        finally:
            server.terminate()
            server.wait(timeout=60)
        print("catalog and workspace inputs:")
        print_rows(
            [
                timed("NUL byte in a manifest row", lambda: nul_manifest_row(tmp)),
                timed(".lock symlink", lambda: lock_symlink(tmp)),
                timed("markup titles", markup_titles),
            ]
        )


if __name__ == "__main__":
    main()
