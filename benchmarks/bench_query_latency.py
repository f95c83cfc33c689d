"""Warm one-photo query latency of the default configuration, this checkout against a baseline
git revision, interleaved so that both see the same machine load.

A query is what the query service does for an upload: decode and resize the photo, embed it
(batch size 1, `--threads` TensorFlow threads: the service's `model_threads`, 1 by default), and
search an index of random unit vectors as large as clothing-small's catalog (3,068 rows, k = 76,
8 probes, as bench_ladder.py's speed mode). Each side runs `--rounds` times in a fresh process,
the two sides in turn; a process times `--queries` test photos after one warm-up query. The
baseline's `vasrch` package is taken from `git archive REV`.

    python benchmarks/bench_query_latency.py --baseline main --rounds 4 --queries 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
PROBES = 8
CLUSTERS = 76


def photos(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def child(dataset: Path, queries: int, threads: int) -> list[float]:
    """Milliseconds of each warm query, in this process (with whichever vasrch it imports)."""
    from threadpoolctl import threadpool_limits

    from vasrch.features.backbones import limit_model_threads

    limit_model_threads(threads)
    from vasrch.catalog.images import decode_image
    from vasrch.config import ClusteringConfig
    from vasrch.features.backbones import BackboneSpec, load_backbone
    from vasrch.index.training import fit_index

    n = len(photos(dataset / "train"))
    catalog = np.random.default_rng(0).normal(size=(n, 1280)).astype(np.float32)
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)
    index, _ = fit_index(np.array([str(i) for i in range(n)], dtype=object), catalog, CLUSTERS,
                         "bench", ClusteringConfig())  # fmt: skip
    backbone = load_backbone(BackboneSpec(), batch_size=1)
    tests = photos(dataset / "test")
    times = []
    with threadpool_limits(1, "blas"):
        for path in [tests[0], *tests[:queries]]:
            start = time.perf_counter()
            pixels = decode_image(path, backbone.spec.input_size).pixels
            index.search(backbone.embed(pixels[None]), 10, PROBES)
            times.append((time.perf_counter() - start) * 1000)
    return times[1:]  # the first warms up


def run_side(package_root: Path, args: argparse.Namespace) -> list[float]:
    """One round of one side in a fresh process whose `vasrch` is the one under package_root."""
    env = {**os.environ, "PYTHONPATH": str(package_root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, __file__, "--child", "--dataset", str(args.dataset),
           "--queries", str(args.queries), "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(name: str, times: list[float]) -> str:
    """p50 / p95 / p99 of one side."""
    t = np.array(times)
    p50, p95, p99 = np.percentile(t, [50, 95, 99])
    return f"{name}: {len(t)} queries, p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--baseline", metavar="REV", help="also measure the vasrch of this revision")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--queries", type=int, default=50, help="timed queries a round and side")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads (0: every core)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.dataset, args.queries, args.threads)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"this checkout": ROOT}
        if args.baseline:
            archive = Path(tmp) / "baseline.tar"
            subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive),
                            args.baseline, "vasrch"], check=True)  # fmt: skip
            with tarfile.open(archive) as tar:
                tar.extractall(Path(tmp) / "baseline", filter="data")
            sides = {f"baseline {args.baseline}": Path(tmp) / "baseline", **sides}
        times: dict[str, list[float]] = {name: [] for name in sides}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, root in sides.items():
                times[name] += run_side(root, args)
                loads.append(os.getloadavg()[0])
    print(f"threads {args.threads}, load average {min(loads):.1f}-{max(loads):.1f}")
    for name, t in times.items():
        print(summary(name, t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
