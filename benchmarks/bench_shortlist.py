"""Why compressed recall stopped below float32's: IVF on float32 vectors against PCA-int8 codes
whose shortlists of W rows are re-ranked exactly, at the same probes (issue 22).

    python benchmarks/bench_shortlist.py [--n 100000] [--k-factor 2]

N photos from the catalog-like generator (default: 16 clusters, no grouping; vectors and
k-means centroids cached under bench-work/shortlist-N/), 500 fresh queries, k = k-factor x
sqrt(N), spherical k-means on a sample of up to 100,000, codes at 400 bytes a photo
(336 PCA dimensions). Prints recall@10 against exact search for each probe count: float32,
then each shortlist size W.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASET, embed_split
from catalog_vectors import fit, generate

SHORTLISTS = (100, 400, 1000, 3000)
PROBES = (8, 16, 32, 64, 128, 256)


def main() -> int:
    from vasrch.index.clustering import train_kmeans
    from vasrch.index.compression import choose_storage, fit_codec
    from vasrch.index.search_index import SearchIndex

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k-factor", type=float, default=2.0)
    p.add_argument("--workspace", type=Path, default=Path("bench-work/quality-ws"))
    args = p.parse_args()
    n = args.n
    work = Path(f"bench-work/shortlist-{n}")
    work.mkdir(parents=True, exist_ok=True)
    model = fit(embed_split(DATASET / "train", args.workspace).vectors, 16)
    cached = work / "vectors.npy"
    if not cached.exists():
        np.save(cached, np.concatenate(list(generate(model, n, seed=1))))
    x = np.load(cached)
    queries = np.concatenate(list(generate(model, 500, seed=2)))
    k = max(1, round(args.k_factor * np.sqrt(n)))
    centroids_file = work / f"centroids-{k}.npy"
    start = time.perf_counter()
    if not centroids_file.exists():
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, 100_000), replace=False))
        with threadpool_limits(1):
            fitted = train_kmeans(x[sample], k, 0)
        np.save(centroids_file, fitted.cluster_centers_.astype(np.float32))
    print(f"kmeans {time.perf_counter() - start:.0f}s k={k}", flush=True)
    centroids = np.load(centroids_file)
    labels = np.argmax(x @ centroids.T - 0.5 * (centroids * centroids).sum(1), 1)
    order = np.argsort(labels, kind="stable")
    offsets = np.zeros(k + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(labels, minlength=k))
    grouped = x[order]
    ids = np.array([f"i{i}" for i in range(n)], dtype=object)
    index = SearchIndex(centroids, grouped, ids, offsets, np.zeros(n, np.float32), "bench")
    exact, _ = index.exact().search_rows(queries, 10, 1)
    codec = fit_codec(grouped, choose_storage(n, x.shape[1], 400).dims)
    codes = codec.encode(grouped)
    scored = codec.queries(queries)

    def recall(rows: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, exact, strict=True)]))

    for probes in (p for p in PROBES if p <= k):
        found, _ = index.search_rows(queries, 10, probes)
        line = f"probes {probes:4d} scanned {probes * n / k:8.0f} float32 {recall(found):.3f}"
        for wide in SHORTLISTS:
            shortlist, _ = index._scan(queries, scored, codes, wide, probes, None, None)
            reranked, _ = index._rerank(queries, shortlist, 10)
            line += f"  W{wide} {recall(reranked):.3f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
