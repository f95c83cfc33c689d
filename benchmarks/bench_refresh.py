"""Refresh (issue 21): freshness with a query service running, and quality after refreshes.

Freshness, end to end on clothing-small: the catalog is the train folder described by a product
manifest (one product per photo, a title each). A run is trained and a query service started on
its workspace; then

- an unchanged catalog is refreshed (target: publishes nothing, under 10 s);
- the manifest is edited at t0: 100 held-out photos (test folder) added as new products, 100
  catalog products removed, 20 retitled; `refresh` runs (target: under 60 s) and the service is
  polled until it serves the new run (target: within 90 s of t0);
- then every removed product is looked for in the service's answers to 300 catalog photos
  (target: none), each new product's photo is sent as a shopper's copy (one pixel changed;
  target: the new product first), and the retitled products' answers show the new titles.

Quality: the catalog's vectors split in two halves (seeded); an index is trained on the first
half as a run trains it (suggested k, calibration on catalog photos), then the second half is
added by refreshes in 4 steps; after each, held-out precision@10 and recall@10 (the test folder's
372 photos, none in the catalog) at the run's calibrated probes and the drift figures, against a
run retrained on the whole catalog.

    python benchmarks/bench_refresh.py [DATASET] [--work FOLDER]

The work folder (default bench-work/refresh in the repository, ignored by git) keeps the
feature cache between runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASET, embed_split

REPO = Path(__file__).resolve().parents[1]
ADDED, REMOVED, RETITLED, ASKED = 100, 100, 20, 300
STEPS = 4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="clothing-small folder")
    p.add_argument("--work", type=Path, default=REPO / "bench-work" / "refresh")
    return p.parse_args()


def manifest(photos: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": [p.replace("/", ":") for p in photos],
            "image": photos,
            "title": [f"{Path(p).parent.name} {Path(p).stem[:8]}" for p in photos],
            "category": [Path(p).parent.name for p in photos],
        }
    )


def ask(url: str, path: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url + path, data=body)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def top_of(url: str, photo: Path) -> dict:
    """The service's first answer to a shopper's copy of `photo` (one pixel changed)."""
    from tests.imagefactory import shopper_copy

    body = json.dumps({"image_base64": base64.b64encode(shopper_copy(photo)).decode()})
    return ask(url, "/query?top_n=10", body.encode())["results"][0]


def freshness(dataset: Path, work: Path) -> dict[str, object]:
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow
    from vasrch.service.runner import make_server

    train = sorted(
        f"train/{p.relative_to(dataset / 'train').as_posix()}"
        for p in (dataset / "train").rglob("*.jpg")
    )
    test = sorted(
        f"test/{p.relative_to(dataset / 'test').as_posix()}"
        for p in (dataset / "test").rglob("*.jpg")
    )
    shop = work / "shop"
    shop.mkdir(parents=True, exist_ok=True)
    manifest(train).to_csv(shop / "products.csv", index=False)
    config = shop / "shop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"path": str(dataset), "manifest": "products.csv"},
                "workspace": str(work / "ws"),
            }
        )
    )
    shutil.rmtree(work / "ws" / "runs", ignore_errors=True)
    start = time.perf_counter()
    trained = train_flow(str(config))
    train_s = time.perf_counter() - start
    server = make_server(work / "ws", host="127.0.0.1", port=0, reload_interval_s=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        unchanged = refresh_flow(str(config))
        rng = np.random.default_rng(0)
        removed = sorted(rng.choice(train, REMOVED, replace=False).tolist())
        added = sorted(rng.choice(test, ADDED, replace=False).tolist())
        kept = [p for p in train if p not in set(removed)]
        table = manifest(kept + added)
        retitled = sorted(rng.choice(kept, RETITLED, replace=False).tolist())
        table.loc[table["image"].isin(retitled), "title"] = "Sale: " + table["title"]
        t0 = time.perf_counter()
        table.to_csv(shop / "products.csv", index=False)
        result = refresh_flow(str(config))
        refresh_s = time.perf_counter() - t0
        while ask(url, "/health")["run_id"] != result.manifest.run_id:
            time.sleep(0.2)
        served_s = time.perf_counter() - t0
        gone = {p.replace("/", ":") for p in removed}
        asked = rng.choice(kept, ASKED, replace=False)
        leaked = 0
        for image in asked:
            rows = ask(url, f"/query?id={urllib.request.quote(image)}&top_n=10")["results"]
            leaked += sum(r["product_id"] in gone for r in rows)
        first = sum(
            top_of(url, dataset / image)["product_id"] == image.replace("/", ":") for image in added
        )
        titled = sum(
            top_of(url, dataset / image)["title"].startswith("Sale: ") for image in retitled
        )
    finally:
        server.shutdown()
        server.server_close()
    refresh = result.manifest.refresh
    return {
        "train_s": round(train_s, 1),
        "unchanged_refresh_s": round(unchanged.seconds, 2),
        "unchanged_published": unchanged.published,
        "refresh_s": round(refresh_s, 1),
        "served_after_edit_s": round(served_s, 1),
        "changes": f"+{refresh.added} -{refresh.removed} ~{refresh.changed}",
        "embedded_by_refresh": result.extract.new,
        "removed_in_answers": f"{leaked} of {ASKED * 10} answer rows",
        "new_product_first": f"{first} of {ADDED}",
        "retitled_first_with_new_title": f"{titled} of {RETITLED}",
        "trained_run": trained.run_id,
    }


def quality(dataset: Path, work: Path) -> pd.DataFrame:
    from vasrch.config import ClusteringConfig, EvaluationConfig, RefreshConfig, SearchConfig
    from vasrch.index.evaluation import precision_at_k, recall_at_k
    from vasrch.index.incremental import measure_drift, refresh_index, size_spread
    from vasrch.index.training import diagnose, evaluate_index, fit_index, recheck_recall

    catalog = embed_split(dataset / "train", work / "ws")
    queries = embed_split(dataset / "test", work / "ws")
    labels = pd.Series(catalog.classes, index=catalog.ids)
    order = np.random.default_rng(1).permutation(len(catalog.ids))
    half = len(order) // 2
    search, evaluation = SearchConfig(), EvaluationConfig()

    def figures(index, probes) -> dict[str, float]:
        q = index.prepare_queries(queries.vectors)
        rows, scores = index.search_rows(q, 10, probes)
        approx = index.result_of(rows, scores)
        rows, scores = index.exact().search_rows(q, 10, 1)
        exact = index.result_of(rows, scores)
        return {
            "held_out_precision_at_10": precision_at_k(approx, queries.classes, labels, 10),
            "held_out_recall_at_10": recall_at_k(approx, exact, 10),
        }

    def trained(rows: np.ndarray):
        ids, vectors = catalog.ids[rows], catalog.vectors[rows]
        k = diagnose(vectors, ClusteringConfig().diagnostics).suggested_k
        index, _ = fit_index(ids, vectors, k, "fp", ClusteringConfig(), search=search)
        probes = evaluate_index(index, ids, vectors, labels, search, evaluation).probes
        return index, probes

    out = []
    index, probes = trained(order[:half])
    spread = size_spread(index)
    out.append(
        {"catalog": f"trained on {half}", "k": index.k, "probes": probes} | figures(index, probes)
    )
    added = 0
    for step, chunk in enumerate(np.array_split(order[half:], STEPS), start=1):
        rows = np.concatenate([order[:half], *np.array_split(order[half:], STEPS)[:step]])
        added += len(chunk)
        start = time.perf_counter()
        index = refresh_index(index, catalog.ids[rows], catalog.vectors[rows], search)
        seconds = time.perf_counter() - start
        recall = recheck_recall(
            index, catalog.ids[rows], catalog.vectors[rows], probes, evaluation, 200
        )
        drift = measure_drift(
            added,
            index.n,
            size_spread(index),
            spread,
            recall,
            search.target_recall,
            RefreshConfig(),
        )
        out.append(
            {
                "catalog": f"refresh {step}: +{len(chunk)}",
                "k": index.k,
                "probes": probes,
                **figures(index, probes),
                "added_share": round(drift.added_share, 3),
                "size_spread": round(drift.size_spread / spread, 2),
                "rechecked_recall": round(recall, 3),
                "retrain_due": drift.retrain_due,
                "refresh_index_s": round(seconds, 2),
            }
        )
    index, probes = trained(order)
    out.append(
        {"catalog": f"retrained on {len(order)}", "k": index.k, "probes": probes}
        | figures(index, probes)
    )
    return pd.DataFrame(out)


def main() -> None:
    args = parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"{args.dataset} is absent")
    sys.path.insert(0, str(REPO))
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    print(f"load average before: {os.getloadavg()}")
    fresh = freshness(args.dataset, args.work)
    print("freshness (clothing-small, query service running):")
    for name, value in fresh.items():
        print(f"  {name}: {value}")
    table = quality(args.dataset, args.work)
    pd.set_option("display.width", 200)
    print("quality (held-out test photos, none in the catalog):")
    print(table.round(4).to_string(index=False))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
