"""Cold `vasrch query` wall time: process start, imports, run load (hash check), model build,
one query. Needs a trained run: `vasrch train config/demo.yaml` (the default) or any config.

    python benchmarks/bench_cold_query.py [--config config/demo.yaml] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from vasrch.config import load_config
    from vasrch.search.searcher import open_run

    cfg = load_config(args.config)
    searcher = open_run(cfg.workspace)
    image = searcher.paths[0]
    cmd = [
        sys.executable,
        "-m",
        "vasrch.cli",
        "query",
        image,
        "-c",
        args.config,
        "--top-n",
        "10",
        "--format",
        "json",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    walls = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - start)
    imports = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import tensorflow"], check=True, capture_output=True, env=env
        )
        imports.append(time.perf_counter() - start)
    print(f"$ python benchmarks/bench_cold_query.py --config {args.config} --repeat {args.repeat}")
    print(f"run {searcher.run_id}: {searcher.index.n} images, k={searcher.index.k}")
    print(
        f"cold `vasrch query` wall time: median {statistics.median(walls):.2f} s "
        f"(min {min(walls):.2f}, max {max(walls):.2f}) over {args.repeat} runs"
    )
    print(f"of which `import tensorflow` alone: median {statistics.median(imports):.2f} s")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
