"""Bulk top-10 over N synthetic 256-d Gaussian-mixture vectors: vasrch vs faiss IndexIVFFlat.

Prints, for each N: index training time (KMeans on a sample + assigning every vector + building
the index), bulk search time (every vector as a query, self excluded, cluster chunk by chunk as
the bulk flow maps them), peak RSS above the data, and recall@10 against exact search on a
sample of queries. With faiss-cpu installed (optional `bench` extra), the same for IndexIVFFlat
with the same number of lists, probes and training sample.

`--copies F` replaces a fraction F of the vectors by near-copies of others (cosine about 0.97),
each with a duplicate print (duplicate_prints) that differs from its original's by a little noise;
every other image gets a random print, or with `--prints-from CACHE` the print of a photo drawn
at random from a feature cache (real product photos: neighbour pairs then cost what real ones
do to score, random prints being cheaper). Bulk search scores every neighbour pair's prints, and
the near-duplicate step that follows groups the pairs at or above `--threshold`; its time is
printed beside the bulk time.

    python benchmarks/bench_bulk.py                      # N = 100k and 1M
    python benchmarks/bench_bulk.py --n 100000 --probes 4 8
    python benchmarks/bench_bulk.py --n 1000000 --probes 1 --prints-from WS/features/FP
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from vasrch.bulk.neighbours import iter_bulk_neighbours
from vasrch.config import BulkConfig
from vasrch.duplicates.groups import duplicate_groups, duplicate_pairs
from vasrch.features.duplicate_prints import PRINT_BYTES
from vasrch.features.extraction import feature_matrix, iter_shards
from vasrch.index.clustering import l2_normalise, train_kmeans
from vasrch.index.evaluation import recall_at_k, sample_queries
from vasrch.index.search_index import SearchResult, brute_force, build_index

TOP_N = 10


def mixture(n: int, dim: int, components: int, spread: float, seed: int) -> np.ndarray:
    """n unit vectors: Gaussian component means plus isotropic noise of `spread` per dimension."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((components, dim), dtype=np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        x[start:stop] = l2_normalise(
            means[rng.integers(components, size=stop - start)] + spread * noise
        )
    return x


class PeakRss:
    """Peak resident memory of this process while the block runs, sampled every 20 ms."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self.start = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    with PeakRss() as rss:
        start = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - start
    return elapsed, rss.extra_mib, value


def real_prints(cache_dir: Path) -> np.ndarray:
    """The prints of the photos in a feature cache, edited copies (ids under edits/) left out."""
    tables = list(iter_shards(cache_dir, ["image_id", "print"]))
    keep = [~pc.starts_with(t.column("image_id"), "edits/").to_numpy(False) for t in tables]
    return np.concatenate(
        [feature_matrix(t, "print")[k] for t, k in zip(tables, keep, strict=True)]
    )


def plant_copies(
    x: np.ndarray, fraction: float, seed: int, pool: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Overwrite `fraction` of the rows with near-copies (cosine ~0.97) of other rows, in place;
    return prints (random, or drawn from `pool`), those of the copies close to their originals',
    and the count."""
    rng = np.random.default_rng([seed, 1])
    n = len(x)
    count = int(n * fraction)
    rows = rng.choice(n, size=2 * count, replace=False)
    copies, originals = rows[:count], rows[count:]
    noise = rng.standard_normal((count, x.shape[1]), dtype=np.float32)
    x[copies] = l2_normalise(x[originals] + 0.25 / np.sqrt(x.shape[1]) * noise)
    if pool is None:
        prints = rng.integers(0, 256, size=(n, PRINT_BYTES), dtype=np.uint8)
    else:
        prints = pool[rng.integers(0, len(pool), size=n)]
    jitter = rng.integers(-3, 4, size=(count, PRINT_BYTES))
    prints[copies] = np.clip(prints[originals] + jitter, 0, 255)
    return prints, count


def vasrch_bulk(
    x, prints, ids, k, probes_list, train_rows, queries, exact, seed, workers, threshold, candidates
):
    def train():
        model = train_kmeans(x, k, seed=seed, max_train_rows=train_rows)
        labels = model.predict(x)
        return build_index(ids, x, model.cluster_centers_, labels, "bench", prints=prints)

    train_s, train_mib, index = timed(train)
    sizes = index.cluster_sizes
    print(
        f"  vasrch train (k={k}, {train_rows} training rows): {train_s:.1f} s, "
        f"peak +{train_mib:.0f} MiB; cluster sizes min/median/max "
        f"{sizes.min()}/{int(np.median(sizes))}/{sizes.max()}"
    )
    wanted = set(ids[queries])
    for probes in probes_list:

        def bulk(probes: int = probes) -> tuple[pd.DataFrame, pd.DataFrame]:
            sampled, hits = [], []
            neighbours = iter_bulk_neighbours(
                index, TOP_N, probes, 50_000, workers, candidates=candidates
            )
            for _, frame in neighbours:
                sampled.append(frame[frame["image_id"].isin(wanted)])
                hits.append(frame[frame["duplicate_score"] >= threshold])
            return pd.concat(sampled), pd.concat(hits)

        bulk_s, bulk_mib, (frame, hits) = timed(bulk)
        dup_s, _, groups = timed(
            lambda hits=hits: duplicate_groups(duplicate_pairs(hits, threshold), ids)
        )
        frame = frame.set_index(["image_id", "rank"])["neighbour_id"]
        got = np.array(
            [[frame.get((i, r), "") for r in range(1, TOP_N + 1)] for i in ids[queries]],
            dtype=object,
        )
        recall = recall_at_k(SearchResult(got, np.zeros(got.shape, np.float32)), exact, TOP_N)
        print(
            f"  vasrch bulk probes={probes}, {workers} workers: {bulk_s:.1f} s, "
            f"peak +{bulk_mib:.0f} MiB, "
            f"recall@10 {recall:.3f}, train+bulk {train_s + bulk_s:.1f} s"
        )
        print(
            f"  vasrch near-duplicates (>= {threshold}): {dup_s:.1f} s, "
            f"{groups['group_id'].nunique()} groups of {len(groups)} images; "
            f"train+bulk+duplicates {train_s + bulk_s + dup_s:.1f} s"
        )


def faiss_bulk(x, k, probes_list, train_rows, queries, exact_rows, seed):
    try:
        import faiss
    except ImportError:
        print("  faiss not installed (pip install faiss-cpu); skipped")
        return

    def train():
        quantizer = faiss.IndexFlatIP(x.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, x.shape[1], k, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        ivf.cp.max_points_per_centroid = max(1, train_rows // k)
        sample = sample_queries(len(x), train_rows, seed)
        ivf.train(x[sample])
        ivf.add(x)
        return ivf

    train_s, train_mib, ivf = timed(train)
    print(f"  faiss train+add (nlist={k}): {train_s:.1f} s, peak +{train_mib:.0f} MiB")
    for probes in probes_list:
        ivf.nprobe = probes

        def bulk():
            rows = np.empty((len(x), TOP_N), dtype=np.int64)
            for start in range(0, len(x), 65_536):
                stop = min(len(x), start + 65_536)
                _, found = ivf.search(x[start:stop], TOP_N + 1)
                self_hit = found == np.arange(start, stop)[:, None]
                # drop self where found, else the last of the 11
                drop = np.where(self_hit.any(1), self_hit.argmax(1), TOP_N)
                keep = np.ones_like(found, dtype=bool)
                keep[np.arange(len(found)), drop] = False
                rows[start:stop] = found[keep].reshape(len(found), TOP_N)
            return rows

        bulk_s, bulk_mib, rows = timed(bulk)
        got = rows[queries]
        hits = (exact_rows[:, :, None] == got[:, None, :]).any(2).sum(1)
        recall = float(np.mean(hits / TOP_N))
        print(
            f"  faiss bulk nprobe={probes}: {bulk_s:.1f} s, peak +{bulk_mib:.0f} MiB, "
            f"recall@10 {recall:.3f}, train+bulk {train_s + bulk_s:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--components", type=int, default=1000, help="mixture components")
    parser.add_argument("--spread", type=float, default=1.0, help="noise per dimension")
    parser.add_argument("--k", type=int, nargs="*", help="clusters per N (default sqrt(N))")
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--train-per-cluster", type=int, default=64)
    parser.add_argument("--sample", type=int, default=1000, help="queries checked for recall")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="bulk chunks run at once"
    )
    parser.add_argument("--copies", type=float, default=0.01, help="fraction of near-copies")
    parser.add_argument(
        "--threshold",
        type=float,
        default=BulkConfig().duplicate_threshold,
        help="duplicate score threshold (default: bulk.duplicate_threshold)",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=BulkConfig().duplicate_candidates,
        help="neighbours per image whose duplicate score is computed "
        "(default: bulk.duplicate_candidates)",
    )
    parser.add_argument(
        "--prints-from", type=Path, help="feature cache folder whose photos' prints to draw"
    )
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pool = None if args.prints_from is None else real_prints(args.prints_from)
    print(
        f"cpus: {os.cpu_count()}; dim {args.dim}; "
        f"{args.components} components, spread {args.spread}"
    )
    for i, n in enumerate(args.n):
        k = args.k[i] if args.k else math.isqrt(n)
        train_rows = min(n, args.train_per_cluster * k)
        x = mixture(n, args.dim, args.components, args.spread, args.seed)
        prints, copies = plant_copies(x, args.copies, args.seed, pool)
        ids = np.char.add("img", np.arange(n).astype(str)).astype(object)
        queries = sample_queries(n, args.sample, args.seed)
        start = time.perf_counter()
        exact = brute_force(x[queries], ids, x, TOP_N, exclude_ids=list(ids[queries]))
        print(
            f"N={n} ({copies} near-copies): exact search for {len(queries)} queries "
            f"{time.perf_counter() - start:.1f} s"
        )
        vasrch_bulk(
            x,
            prints,
            ids,
            k,
            args.probes,
            train_rows,
            queries,
            exact,
            args.seed,
            args.workers,
            args.threshold,
            args.candidates,
        )
        if not args.no_faiss:
            exact_rows = np.vectorize(lambda s: int(s[3:]), otypes=[np.int64])(exact.ids)
            faiss_bulk(x, k, args.probes, train_rows, queries, exact_rows, args.seed)


if __name__ == "__main__":
    main()
