"""How long a read-only CLI command takes to give up on a workspace store that cannot be
reached, before it warns and uses its cache: with the quick settings it uses when the cache
holds a verified copy of LATEST (vasrch.cli.options.QUICK_READS) and with the store's defaults.

Two unreachable stores on loopback: a closed port (connections refused at once) and a hung one
(a socket that accepts connections and never answers, like a stalled proxy). Each case times
`follow_or_why`, what the CLI calls first; quick and default runs alternate. The default
against the hung store takes minutes (six tries of s3fs's 15 s read timeout plus backoff), so
it runs only with --hung-default.

    python benchmarks/bench_store_fallback.py --repeat 3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vasrch.cli.options import QUICK_READS  # noqa: E402
from vasrch.workspace.remote_runs import follow_or_why  # noqa: E402
from vasrch.workspace.store import WorkspaceStore  # noqa: E402


def _store(endpoint: str) -> WorkspaceStore:
    options = {
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    return WorkspaceStore("s3://vasrch-bench/workspace", options)


def _timed(store: WorkspaceStore, cache: Path) -> tuple[float, str]:
    start = time.monotonic()
    problem = follow_or_why(store, cache) or "answered"
    return time.monotonic() - start, problem.rsplit("(", 1)[-1][:60]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hung-default", action="store_true", help="also the slow case")
    args = parser.parse_args()
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    endpoints = {
        "closed port": f"http://127.0.0.1:{closed.getsockname()[1]}",
        "hung store": f"http://127.0.0.1:{hung.getsockname()[1]}",
    }
    print(f"load average {os.getloadavg()[0]:.1f}; quick = {QUICK_READS}")
    with tempfile.TemporaryDirectory(dir=REPO / "bench-work") as cache:
        for name, endpoint in endpoints.items():
            for i in range(args.repeat):
                kinds = ["quick"]
                if name == "closed port" or (args.hung_default and i == 0):
                    kinds.append("default")
                for kind in kinds:
                    store = _store(endpoint)
                    if kind == "quick":
                        store = dataclasses.replace(store, **QUICK_READS)
                    took, why = _timed(store, Path(cache))
                    print(f"{name:12} {kind:8} {took:6.2f} s  ({why})")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
