"""Search quality on photos the index has not seen, one row per retrieval step (issue 9).

clothing-small's train folder is the catalog (3,068 photos) and its test folder the held-out
queries (372 photos, none of them in the catalog); a photo's class is its folder. Features are
the project's EfficientNet-Lite0 vectors (bench_quality.embed_split, cached in its workspace).
For each step the index is built as a run builds it (default diagnostics sweep and suggested k,
then vasrch.index.training.fit_index and evaluate_index with the held-out photos):

- plain: the vectors as extracted (issue 3's method);
- centred: centred on the catalog mean and re-normalised;
- + augmentation: database-side augmentation (each catalog vector + its 5 nearest, weighted
  by similarity^3);
- + expansion: alpha query expansion (the query + its 2 best results, weighted by
  similarity^3);
- all three (the default config);
- the default held within 400 and 200 bytes a photo (search.max_bytes_per_photo: PCA int8
  codes, shortlists re-ranked from the float32 vectors), as a catalog above 200,000 photos is.

Each row reports held-out precision@10 of exact search and of the index at its probes, recall@10
against exact search over the same vectors (expansion included), and the probes calibrated on
the held-out photos; then the probes calibrated *without* them (catalog photos with their near
photos left out, what a run without `evaluation.queries` uses) and the held-out recall at those.

First, how the defaults were chosen: exact-search precision@10 of candidate settings on a
split of the catalog alone (600 train photos against the other 2,468; test photos unused).
Then the warm latency of one query with the default index (decode + embed + search, one photo at
a time, as the query server answers), and the train flow's run time on the catalog with the
old defaults (plain vectors, k swept 2..40 in the full space) and the new ones, features cached,
after one untimed run that starts Prefect's temporary server.

    python benchmarks/bench_heldout.py                      # clothing-small, bench-work/quality/ws
    python benchmarks/bench_heldout.py DATASET --workspace WS
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASET, WORKSPACE, Split, embed_split

STEPS = {
    "plain": {"centre": False, "database_augmentation": 0, "query_expansion": 0},
    "centred": {"centre": True, "database_augmentation": 0, "query_expansion": 0},
    "centred + augmentation": {"centre": True, "query_expansion": 0},
    "centred + expansion": {"centre": True, "database_augmentation": 0},
    "all three (default)": {},
    "default, 400 B/photo (compressed)": {"max_bytes_per_photo": 400},
    "default, 200 B/photo (compressed)": {"max_bytes_per_photo": 200},
}
OLD_DEFAULTS = {
    "search": STEPS["plain"],
    "clustering": {"diagnostics": {"k_min": 2, "k_max": 40, "k_step": 2, "n_components": None}},
}
LATENCY_QUERIES = 200


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="clothing-small folder")
    p.add_argument(
        "--workspace", type=Path, default=WORKSPACE, help="feature cache (kept between runs)"
    )
    p.add_argument("--skip-flow", action="store_true", help="no train-flow timing")
    return p.parse_args()


def step_rows(catalog: Split, queries: Split) -> pd.DataFrame:
    """One row per retrieval step: k, held-out figures and both calibrations."""
    from vasrch.config import ClusteringConfig, EvaluationConfig, SearchConfig
    from vasrch.index.training import HeldOut, diagnose, evaluate_index, fit_index

    labels = pd.Series(catalog.classes, index=catalog.ids)
    held_out = HeldOut(queries.ids, queries.vectors, pd.Series(queries.classes, index=queries.ids))
    k = diagnose(catalog.vectors, ClusteringConfig().diagnostics).suggested_k
    rows = []
    for name, fields in STEPS.items():
        search = SearchConfig(**fields)
        start = time.perf_counter()
        index, _ = fit_index(
            catalog.ids, catalog.vectors, k, "bench", ClusteringConfig(), None, search
        )
        fit_s = time.perf_counter() - start
        figures = evaluate_index(
            index, catalog.ids, catalog.vectors, labels, search, EvaluationConfig(), held_out
        ).figures()
        without = evaluate_index(
            index, catalog.ids, catalog.vectors, labels, search, EvaluationConfig()
        ).figures()
        at_those = evaluate_index(
            index,
            catalog.ids,
            catalog.vectors,
            labels,
            SearchConfig(**fields, probes=int(without["probes"])),
            EvaluationConfig(sample=10),
            held_out,
        ).figures()
        rows.append(
            {
                "step": name,
                "k": k,
                "exact p@10": figures["held_out_exact_precision_at_10"],
                "p@10": figures["held_out_precision_at_10"],
                "recall@10": figures["held_out_recall_at_10"],
                "probes (held-out)": int(figures["probes"]),
                "probes (no held-out)": int(without["probes"]),
                "held-out recall at those": at_those["held_out_recall_at_10"],
                "fit s": fit_s,
            }
        )
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


VALIDATION = {  # how the defaults were chosen: (augmentation neighbours, expansion)
    "centred": (0, 0),
    "centred + expansion 3": (0, 3),
    "augmentation 3 + expansion 3": (3, 3),
    "augmentation 2 + expansion 3": (2, 3),
    "augmentation 5 + expansion 3": (5, 3),
    "augmentation 5 + expansion 2": (5, 2),
    "augmentation 8 + expansion 3": (8, 3),
}
VALIDATION_QUERIES = 600


def validation_rows(catalog: Split) -> pd.DataFrame:
    """Exact-search precision@10 of each candidate setting on a seeded split of the catalog
    alone (VALIDATION_QUERIES train photos as queries against the rest): the test photos play
    no part in choosing the defaults."""
    from vasrch.config import ClusteringConfig, SearchConfig
    from vasrch.index.evaluation import precision_at_k
    from vasrch.index.training import fit_index

    order = np.random.default_rng(0).permutation(len(catalog.ids))
    held, kept = order[:VALIDATION_QUERIES], order[VALIDATION_QUERIES:]
    labels = pd.Series(catalog.classes[kept], index=catalog.ids[kept])
    rows = []
    for name, (neighbours, expansion) in VALIDATION.items():
        search = SearchConfig(database_augmentation=neighbours, query_expansion=expansion)
        index, _ = fit_index(
            catalog.ids[kept], catalog.vectors[kept], 1, "bench", ClusteringConfig(), None, search
        )
        answers = index.exact().search(catalog.vectors[held], 10)
        precision = precision_at_k(answers, catalog.classes[held], labels, 10)
        rows.append({"setting": name, "validation p@10": precision})
    return pd.DataFrame(rows)


def latency_ms(catalog: Split, queries: Split, dataset: Path) -> np.ndarray:
    """Warm single-query times (decode + embed + search with the default index), in ms."""
    from threadpoolctl import threadpool_limits

    from vasrch.config import ClusteringConfig, SearchConfig
    from vasrch.features.backbones import BackboneSpec, load_backbone
    from vasrch.index.training import fit_index
    from vasrch.search.searcher import embed_files

    index, _ = fit_index(catalog.ids, catalog.vectors, 40, "bench", ClusteringConfig())
    probes = SearchConfig().max_probes // 4
    backbone = load_backbone(BackboneSpec(), batch_size=1)
    files = [dataset / "test" / i for i in queries.ids[:LATENCY_QUERIES]]
    embed_files(files[:1], backbone)
    times = []
    with threadpool_limits(1, "blas"):
        for path in files:
            start = time.perf_counter()
            vectors, _, _ = embed_files([path], backbone)
            index.search(vectors, 10, probes)
            times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def flow_seconds(dataset: Path, workspace: Path, overrides: dict) -> float:
    """Wall time of the train flow on the catalog (features already cached)."""
    from vasrch.orchestration.flows.train import train_flow

    config = {
        "catalog": {"path": str(dataset / "train")},
        "workspace": str(workspace),
        "bulk": {"enabled": False},
        **overrides,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        start = time.perf_counter()
        train_flow(str(path))
        return time.perf_counter() - start


def main() -> int:
    args = parse_args()
    if not args.dataset.is_dir():
        print(f"dataset not found: {args.dataset}", file=sys.stderr)
        return 2
    catalog = embed_split(args.dataset / "train", args.workspace)
    queries = embed_split(args.dataset / "test", args.workspace)
    print(f"catalog {len(catalog.ids)} photos, held-out queries {len(queries.ids)} photos")
    print(validation_rows(catalog).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    table = step_rows(catalog, queries)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    times = latency_ms(catalog, queries, args.dataset)
    print(
        f"warm single query (decode + embed + search, expansion on): p50 "
        f"{np.percentile(times, 50):.1f} ms, p95 {np.percentile(times, 95):.1f} ms "
        f"over {len(times)} photos"
    )
    if not args.skip_flow:
        held = {"evaluation": {"queries": str(args.dataset / "test")}}
        flow_seconds(args.dataset, args.workspace, {})  # starts Prefect's temporary server
        old = flow_seconds(args.dataset, args.workspace, OLD_DEFAULTS)
        new = flow_seconds(args.dataset, args.workspace, {})
        with_held = flow_seconds(args.dataset, args.workspace, held)
        print(
            f"train flow, features cached: old defaults {old:.1f} s, new defaults {new:.1f} s "
            f"({new / old - 1:+.0%}), new + held-out evaluation {with_held:.1f} s "
            f"({with_held / old - 1:+.0%})"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
