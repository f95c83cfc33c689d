"""Do the synthetic vectors behave like real photos? (issue 22)

The generator (catalog_vectors) is fitted on clothing-small's train features (bench_quality's
extraction, cached in the workspace); it then makes as many synthetic catalog photos as the
real catalog has, and as many fresh queries as the real held-out (test) photos. Both are indexed
the same way (centred, spherical k-means at the same photos per cluster, no augmentation or
expansion) and compared: recall@10 against exact search at 1..16 probes, and the distribution
of the exact neighbours' scores (quantiles of each query's best and 10th best cosine).

    python benchmarks/bench_catalog_vectors.py [DATASET] [--workspace WS] [--grouping 0.3 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASET, embed_split
from catalog_vectors import fit, generate

PROBES = (1, 2, 3, 4, 6, 8, 12, 16)
PER_CLUSTER = 40  # photos per cluster, as the default sweep chooses for clothing-small (k=76)
QUANTILES = (0.1, 0.5, 0.9)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET)
    p.add_argument("--workspace", type=Path, default=Path("bench-work/quality-ws"))
    p.add_argument("--grouping", type=float, nargs="+", default=[0.0])
    p.add_argument("--clusters", type=int, nargs="+", default=[16], help="the model's clusters")
    p.add_argument("--rank", type=int, default=48, help="PCA directions kept per cluster")
    p.add_argument("--group-size", type=int, default=8)
    return p.parse_args()


def profile(catalog: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """recall@10 at each of PROBES, and quantiles of the exact top-1 and top-10 scores."""
    from vasrch.config import ClusteringConfig, SearchConfig
    from vasrch.index.evaluation import recall_at_k
    from vasrch.index.training import fit_index

    ids = np.array([f"p{i}" for i in range(len(catalog))], dtype=object)
    k = max(2, round(len(catalog) / PER_CLUSTER))
    plain = SearchConfig(database_augmentation=0, query_expansion=0)
    index, _ = fit_index(ids, catalog, k, "bench", ClusteringConfig(), search=plain)
    x = index.prepare_queries(queries)
    exact = index.result_of(*index.exact().search_rows(x, 10, 1))
    row = {
        f"recall p={p}": recall_at_k(index.result_of(*index.search_rows(x, 10, p)), exact, 10)
        for p in PROBES
    }
    for q in QUANTILES:
        row[f"top1 q{q:g}"] = float(np.quantile(exact.scores[:, 0], q))
        row[f"top10 q{q:g}"] = float(np.quantile(exact.scores[:, 9], q))
    return row


def main() -> int:
    args = parse_args()
    train = embed_split(args.dataset / "train", args.workspace)
    test = embed_split(args.dataset / "test", args.workspace)
    rows = [{"vectors": "real (clothing-small)", **profile(train.vectors, test.vectors)}]
    for clusters in args.clusters:
        for grouping in args.grouping:
            model = fit(train.vectors, clusters, args.rank, grouping, args.group_size)
            catalog = np.concatenate(list(generate(model, len(train.ids), seed=1)))
            queries = np.concatenate(list(generate(model, len(test.ids), seed=2)))
            name = f"synthetic c={clusters} g={grouping:g}"
            rows.append({"vectors": name, **profile(catalog, queries)})
    table = pd.DataFrame(rows)
    print(f"{len(train.ids)} catalog photos, {len(test.ids)} queries, {PER_CLUSTER} per cluster")
    print(table.T.to_string(header=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
