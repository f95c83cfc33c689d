"""Warm one-photo query latency of the default configuration (or `--backbone`), this checkout
against a baseline git revision, interleaved so that both see the same machine load.

A query is what the query service does for an upload: decode and resize the photo, embed it
(batch size 1, `--threads` TensorFlow threads: the service's `model_threads`, 1 by default), and
search an index of random unit vectors as large as clothing-small's catalog (3,068 rows, k = 76,
8 probes, as bench_ladder.py's speed mode). Each side is a warm process of its own (the
baseline's `vasrch` package taken from `git archive REV`); the sides answer the same test photo
in turn, query by query, `--queries` each after one warm-up query.

    python benchmarks/bench_query_latency.py --baseline main --queries 200
"""

from __future__ import annotations

import argparse
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


def child(dataset: Path, threads: int, backbone_name: str) -> None:
    """Answer each photo path read from stdin with the milliseconds its query took, wall-clock
    and CPU (all threads of this process, with whichever vasrch it imports); "ready" once warm."""
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
    backbone = load_backbone(BackboneSpec(name=backbone_name), batch_size=1)

    def query(path: str) -> str:
        start, cpu = time.perf_counter(), time.process_time()
        pixels = decode_image(path, backbone.spec.input_size).pixels
        index.search(backbone.embed(pixels[None]), 10, PROBES)
        return (
            f"{(time.perf_counter() - start) * 1000:.3f} {(time.process_time() - cpu) * 1000:.3f}"
        )

    with threadpool_limits(1, "blas"):
        query(str(photos(dataset / "test")[0]))  # warms up
        print("ready", flush=True)
        for line in sys.stdin:
            print(query(line.strip()), flush=True)


def start_side(package_root: Path, args: argparse.Namespace) -> subprocess.Popen:
    """A warm child process whose `vasrch` is the one under package_root."""
    env = {**os.environ, "PYTHONPATH": str(package_root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, __file__, "--child", "--dataset", str(args.dataset),
           "--threads", str(args.threads), "--backbone", args.backbone]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd="/")  # fmt: skip
    while (line := proc.stdout.readline()) and line.strip() != "ready":
        pass
    if not line:
        raise RuntimeError(f"the child for {package_root} ended before it was ready")
    return proc


def timed(proc: subprocess.Popen, path: Path) -> tuple[float, float]:
    """Wall-clock and CPU milliseconds of one query by a warm child."""
    proc.stdin.write(f"{path}\n")
    proc.stdin.flush()
    wall, cpu = proc.stdout.readline().split()
    return float(wall), float(cpu)


def summary(name: str, times: list[tuple[float, float]]) -> str:
    """p50 / p95 / p99 of one side's wall-clock times, and its median CPU time."""
    wall, cpu = np.array(times).T
    p50, p95, p99 = np.percentile(wall, [50, 95, 99])
    return (f"{name}: {len(wall)} queries, p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms; "
            f"CPU {np.median(cpu):.1f} ms a query (median)")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--baseline", metavar="REV", help="also measure the vasrch of this revision")
    p.add_argument("--queries", type=int, default=200, help="timed queries a side")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads (0: every core)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="with the default pooling")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.dataset, args.threads, args.backbone)
        return 0
    tests = photos(args.dataset / "test")
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"this checkout": ROOT}
        if args.baseline:
            archive = Path(tmp) / "baseline.tar"
            subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive),
                            args.baseline, "vasrch"], check=True)  # fmt: skip
            with tarfile.open(archive) as tar:
                tar.extractall(Path(tmp) / "baseline", filter="data")
            roots = {f"baseline {args.baseline}": Path(tmp) / "baseline", **roots}
        sides = {name: start_side(root, args) for name, root in roots.items()}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        loads = [os.getloadavg()[0]]
        for i in range(args.queries):  # query by query, each side in turn
            for name, proc in sides.items():
                times[name].append(timed(proc, tests[i % len(tests)]))
            if i % 50 == 49:
                loads.append(os.getloadavg()[0])
        for proc in sides.values():
            proc.stdin.close()
            proc.wait()
    print(
        f"{args.backbone}, threads {args.threads}, load average {min(loads):.1f}-{max(loads):.1f}"
    )
    for name, t in times.items():
        print(summary(name, t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
