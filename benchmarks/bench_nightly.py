"""Wall time of the nightly flow on an unchanged catalog (target: under 30 s for clothing-small,
with nothing extracted).

The workspace is trained once when it has no LATEST run (the first extraction of clothing-small
takes a few minutes on a 2-core CPU; later runs reuse the feature cache), then `nightly_flow` is
timed `--repeat` times on the unchanged catalog, in this process. Each nightly adds a run folder
(pruned by runs.keep_last). The config is vasrch's defaults on the catalog (bulk step included),
or --config. The first flow of the process starts Prefect's temporary local API unless
PREFECT_API_URL names a server; the training run absorbs that, and otherwise the first repeat
does, so the median of the repeats is the figure. Stage timings come from each run's manifest;
the load average is printed because other processes on a small machine change the figures.

    python benchmarks/bench_nightly.py --workspace /tmp/nightly-ws
    python benchmarks/bench_nightly.py --config my.yaml --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import yaml

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clothing-small" / "train"
TARGET_S = 30.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="catalog folder")
    p.add_argument("--workspace", type=Path, default=Path("workspace/bench-nightly"))
    p.add_argument("--config", type=Path, help="config to use instead of the defaults")
    p.add_argument("--repeat", type=int, default=3, help="timed nightly runs")
    return p.parse_args()


def config_file(args: argparse.Namespace) -> Path:
    if args.config:
        return args.config.resolve()
    args.workspace.mkdir(parents=True, exist_ok=True)
    path = args.workspace.resolve() / "bench-nightly.yaml"
    data = {"catalog": {"path": str(args.dataset.resolve())}, "workspace": str(path.parent)}
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> int:
    args = parse_args()
    for key, value in {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }.items():
        os.environ.setdefault(key, value)
    from vasrch.config import load_config
    from vasrch.orchestration.flows.nightly import nightly_flow
    from vasrch.orchestration.flows.train import train_flow
    from vasrch.workspace import runs

    path = config_file(args)
    workspace = load_config(path).workspace
    if runs.latest_run_id(workspace) is None:
        print(f"no LATEST run in {workspace}: training once (extracts the whole catalog) ...")
        clock = time.perf_counter()
        first = train_flow(str(path))
        print(f"  trained {first.run_id} in {time.perf_counter() - clock:.1f} s")

    walls = []
    for i in range(args.repeat):
        load = os.getloadavg()[0]
        clock = time.perf_counter()
        result = nightly_flow(str(path))
        wall = time.perf_counter() - clock
        walls.append(wall)
        manifest, extract = result.train.manifest, result.train.extract
        print(
            f"nightly {i + 1}: {wall:.1f} s wall, extracted {extract.new} of "
            f"{manifest.counts.catalog} images, k={manifest.k} "
            f"(warm start: {result.warm_start}), promoted: {manifest.promoted}, "
            f"load average before: {load:.1f}"
        )
        stages = manifest.timings.model_dump(exclude_none=True)
        print("  stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        if extract.new:
            print("  warning: the catalog changed or the cache was incomplete", file=sys.stderr)
    median = statistics.median(walls)
    verdict = "meets" if median < TARGET_S else "misses"
    print(f"median nightly wall time: {median:.1f} s ({verdict} the {TARGET_S:.0f} s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
