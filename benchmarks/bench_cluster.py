"""Scale-out on Dask workers that share no disk: extraction and bulk with 1 and 2 worker
processes, catalog and workspace on an S3 store, against threads on local disk.

The workers are real `dask worker` processes (tests/dask_cluster.py: run as nobody, each with
its own HOME, TMPDIR and working folder, single-threaded), the store a SeaweedFS server kept in
bench-work/cluster/. Both clusters (1 worker, 2 workers) are started and warmed (TensorFlow and
the backbone built) before anything is timed; then the runs are interleaved (local, 1 worker,
2 workers, twice) so a busy machine shows in every column alike; the load average is printed
after each run. While a run is timed, the other cluster is paused (SIGSTOP, Cluster.paused):
idle, it still wakes up on the same cores (about 2 s of a 16 s 2-worker bulk run of 100,000
vectors), which a 2-worker run on 2 cores pays for and a 1-worker run does not.

- extraction: `extract_flow` on the first --limit photos of clothing-small into a fresh
  workspace each time: local (folder catalog, local workspace, threads) or on a cluster (the
  photos in a bucket, the workspace on the store: the workers download photos and upload
  shards, the flow gathers them). Wall seconds of the whole flow, images/s.
- bulk: --bulk-n synthetic vectors (benchmarks/catalog_vectors.py, bench_scale's generator, here
  fitted on the photos the extraction embedded), clustered and saved as an index; bulk_stage
  with top 10 at --probes: local (threads read the index from disk) or on a cluster (the index
  uploaded to the store once; each worker downloads it, verified, and uploads its neighbour
  shards, which the flow gathers). Wall seconds.

    python benchmarks/bench_cluster.py --limit 256 --bulk-n 30000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_object_store import DATASET, sample  # noqa: E402

WORK = REPO / "bench-work" / "cluster"
BUCKET = "vasrch-cluster-bench"
COLUMNS = ("local", "1 worker", "2 workers")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=256, help="photos of clothing-small to extract")
    p.add_argument("--bulk-n", type=int, default=30_000, help="synthetic vectors for bulk")
    p.add_argument("--k", type=int, default=64, help="clusters of the bulk index")
    p.add_argument("--probes", type=int, default=8, help="clusters each bulk query searches")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET)
    return p.parse_args()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def extract_config(folder: Path, name: str, catalog: str, workspace: dict, runner: dict) -> str:
    data = {"catalog": {"path": catalog}, **workspace, "runner": runner}
    data["features"] = {"batch_size": 32, "shard_size": 64}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def main() -> None:
    args = parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"dataset folder not found: {args.dataset}")
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import numpy as np
    import pandas as pd
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from benchmarks.catalog_vectors import fit, generate
    from tests.dask_cluster import dask_cluster
    from tests.object_store import s3_environment, seaweedfs, upload_folder
    from vasrch.catalog.scan import scan_catalog
    from vasrch.config import BulkConfig, RunnerConfig, load_config
    from vasrch.features.backbones import BackboneSpec, fingerprint
    from vasrch.features.extraction import cache_dir_for, load_vectors
    from vasrch.index.clustering import train_kmeans
    from vasrch.index.search_index import build_index, save
    from vasrch.layout import BulkLayout
    from vasrch.orchestration.flows.bulk import SharedBulk, bulk_stage
    from vasrch.orchestration.flows.extract import extract_flow
    from vasrch.orchestration.task_runners import prefect_api_url, use_runner
    from vasrch.search.parameters import SearchParams
    from vasrch.workspace.store import WorkspaceStore
    from vasrch.workspace.store_folders import StoreFiles, StoreFolder

    @flow
    def api_url() -> str:
        return prefect_api_url()

    @flow(validate_parameters=False)
    def bulk(index_dir: str, out: str, runner: RunnerConfig, shared: SharedBulk | None) -> int:
        with use_runner(runner):
            summary = bulk_stage(
                index_dir=Path(index_dir),
                out=BulkLayout(Path(out)),
                params=SearchParams(top_n=10, probes=args.probes),
                bulk=BulkConfig(chunk_rows=max(1000, args.bulk_n // 8)),
                csv=False,
                catalog=catalog,
                hidden=frozenset(),
                shared=shared,
            )
        return summary.neighbour_rows

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=WORK)))
        folder = sample(args.dataset, args.limit, tmp / "catalog")
        store = stack.enter_context(seaweedfs(WORK / "store"))
        fs = store.filesystem()
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        run_prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        upload_folder(store, folder, f"{run_prefix}/catalog")
        stack.enter_context(s3_environment(store))
        api = api_url()
        stack.enter_context(temporary_settings({PREFECT_API_URL: api}))
        clusters = {
            name: stack.enter_context(dask_cluster(n, api, tmp / f"logs-{n}"))
            for name, n in (("1 worker", 1), ("2 workers", 2))
        }
        runners = {"local": {"type": "thread"}} | {
            name: {"type": "dask", "address": c.address} for name, c in clusters.items()
        }

        def alone(run: Callable[[str], float]) -> Callable[[str], float]:
            """`run` with every cluster but its column's paused: an idle cluster's heartbeats
            and memory polls would take CPU from the column being timed."""

            def others_paused(name: str) -> float:
                with ExitStack() as paused:
                    for other, cluster in clusters.items():
                        if other != name:
                            paused.enter_context(cluster.paused())
                    return run(name)

            return others_paused

        @alone
        def extraction(name: str) -> float:
            tag = f"{name.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
            if name == "local":
                catalog, workspace = str(folder), {"workspace": str(tmp / tag)}
            else:
                catalog = f"{run_prefix}/catalog"
                workspace = {"workspace": f"{run_prefix}/{tag}", "workspace_cache": str(tmp / tag)}
            config = extract_config(tmp, tag, catalog, workspace, runners[name])
            start = time.perf_counter()
            summary = extract_flow(config)
            seconds = time.perf_counter() - start
            assert summary.new == args.limit and summary.rejected == 0, summary.as_dict()
            return seconds

        for name in COLUMNS:  # warm: this process and each worker build the model once
            extraction(name)
        extract_s = interleave(args.rounds, extraction)

        # bulk index from synthetic vectors fitted on the photos just embedded
        local_ws = tmp / "fit"
        fit_config = extract_config(tmp, "fit", str(folder), {"workspace": str(local_ws)}, {})
        extract_flow(fit_config)
        cfg = load_config(fit_config)
        cache = cache_dir_for(cfg.workspace, fingerprint(BackboneSpec.from_config(cfg.features)))
        _, real = load_vectors(cache, scan_catalog(folder).table)
        model = fit(real, clusters=8, rank=16)  # few photos: fewer clusters and directions
        vectors = np.concatenate(list(generate(model, args.bulk_n, seed=1)))
        ids = np.array([f"p{i:07d}" for i in range(len(vectors))], dtype=object)
        kmeans = train_kmeans(vectors, args.k, seed=0, max_train_rows=20_000)
        index = build_index(ids, vectors, kmeans.cluster_centers_, kmeans.predict(vectors), "b")
        index_dir = save(index, tmp / "index")
        catalog = pd.DataFrame({"image_id": ids, "product_id": ids})
        on_store = WorkspaceStore(f"{run_prefix}/bulk-index", store.storage_options)
        index_folder = StoreFolder(on_store, "index")
        shared_index = StoreFiles.of(index_folder, index_folder.upload_files(index_dir))

        @alone
        def bulk_run(name: str) -> float:
            out = tmp / f"bulk-{uuid.uuid4().hex[:8]}"
            shared = None
            if name != "local":
                shared = SharedBulk(shared_index, StoreFolder(on_store, out.name))
            runner = RunnerConfig(**runners[name])
            start = time.perf_counter()
            rows = bulk(str(index_dir), str(out), runner, shared)
            assert rows == 10 * args.bulk_n, rows
            return time.perf_counter() - start

        for name in COLUMNS:  # warm: imports, and each worker's copy of the index
            bulk_run(name)
        bulk_s = interleave(args.rounds, bulk_run)

    print(f"CPUs {os.cpu_count()}; every figure is the wall time of a whole flow run")
    report(f"extraction of {args.limit} photos", extract_s, args.limit, "images/s")
    report(f"bulk top-10 of {args.bulk_n} vectors, k={args.k}, probes={args.probes}", bulk_s)


def interleave(rounds: int, run: Callable[[str], float]) -> dict[str, list[tuple[float, str]]]:
    """Each column's seconds with the load average after it, the columns taken in turn."""
    seconds: dict[str, list[tuple[float, str]]] = {name: [] for name in COLUMNS}
    for _ in range(rounds):
        for name in COLUMNS:
            seconds[name].append((run(name), load()))
            print(f"  {name}: {seconds[name][-1]}", file=sys.stderr, flush=True)
    return seconds


def report(
    what: str, seconds: dict[str, list[tuple[float, str]]], items: int = 0, unit: str = ""
) -> None:
    print(what)
    local = min(s for s, _ in seconds["local"])
    for name, runs in seconds.items():
        best = min(s for s, _ in runs)
        rate = f"  {items / best:6.1f} {unit}" if items else ""
        each = ", ".join(f"{s:.1f} s ({lo})" for s, lo in runs)
        print(f"  {name:<10} best {best:6.1f} s{rate}  x{local / best:.2f} of local;  {each}")


if __name__ == "__main__":
    main()
