"""Products (issue 10): product-level answers, filtered queries, and a 100,000-row manifest scan.

The catalog is clothing-small's train folder turned into products of 2-3 real photos: each
original photo plus one or two listing shots made from it (mirrored and cropped; brighter and
cropped from another corner), all saved as JPEG. The held-out queries are the test folder's
photos (none in the catalog); a photo's class is its folder, a product's `category`.

- Product-level precision@10 of held-out queries (the index answering with distinct products)
  against the photo-level figures: the same items with one photo each (the originals alone,
  clothing-small as issue 9 measured it), and the same index answering photo by photo, where
  one product's shots fill several places (answers repeating a product counted).
- Filtered queries: each held-out query filtered on one category (a tenth of the catalog) and on
  two; recall@10 against exact filtered search, and the warm latency of the filtered search
  alone and of a whole query (decode + embed + filtered search) through vasrch.search.searcher.
- A manifest of 100,000 rows (hard links to the photos, spread over 100 folders): the first
  scan (reading and hashing every file) and a rescan with the previous table (stat only).

    python benchmarks/bench_products.py                      # clothing-small
    python benchmarks/bench_products.py DATASET --workspace WS
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageOps
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASET, WORKSPACE, embed_split

TOP = 10
LATENCY_QUERIES = 200
MANIFEST_ROWS = 100_000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="clothing-small folder")
    p.add_argument("--workspace", type=Path, default=WORKSPACE, help="feature cache")
    p.add_argument("--work", type=Path, default=None, help="folder for the product photos")
    return p.parse_args()


def crop(image: Image.Image, keep: float, corner: bool) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * keep), int(h * keep)
    left, top = (0, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
    return image.crop((left, top, left + cw, top + ch))


def make_products(train: Path, out: Path) -> pd.DataFrame:
    """Write each train photo and its 1-2 listing shots under `out`; the manifest rows."""
    rows = []
    for i, source in enumerate(sorted(train.glob("*/*.jpg"))):
        category = source.parent.name
        product = f"{category}-{source.stem}"
        folder = out / category
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.open(source).convert("RGB")
        shots = {
            "a": image,
            "b": crop(ImageOps.mirror(image), 0.9, corner=False),
        }
        if i % 2:
            shots["c"] = crop(ImageEnhance.Brightness(image).enhance(1.2), 0.85, corner=True)
        for name, shot in shots.items():
            target = folder / f"{source.stem}_{name}.jpg"
            if not target.exists():
                shot.save(target, quality=90)
            rows.append(
                {
                    "product_id": product,
                    "image": f"{category}/{target.name}",
                    "category": category,
                    "title": f"{category} {source.stem}",
                }
            )
    return pd.DataFrame(rows)


def originals_precision(catalog, queries) -> dict:
    """The photo-level figure of the same items with one photo each (each product's first
    photo, the original): held-out precision@10, exact and at the calibrated probes."""
    from vasrch.config import ClusteringConfig, EvaluationConfig, SearchConfig
    from vasrch.index.training import HeldOut, diagnose, evaluate_index, fit_index

    first = np.array([i.endswith("_a.jpg") for i in catalog.ids])
    ids, vectors = catalog.ids[first], catalog.vectors[first]
    k = diagnose(vectors, ClusteringConfig().diagnostics).suggested_k
    index, _ = fit_index(ids, vectors, k, "fp", ClusteringConfig(), None, SearchConfig())
    labels = pd.Series(catalog.classes[first], index=ids)
    held_out = HeldOut(queries.ids, queries.vectors, pd.Series(queries.classes, index=queries.ids))
    metrics = evaluate_index(
        index, ids, vectors, labels, SearchConfig(), EvaluationConfig(), held_out
    ).figures()
    return {
        "one photo per product: photo-level precision@10 (exact)": metrics[
            "held_out_exact_precision_at_10"
        ],
        "one photo per product: photo-level precision@10 (probes)": metrics[
            "held_out_precision_at_10"
        ],
    }


def quality(catalog, queries, manifest: pd.DataFrame) -> tuple[dict, object, object]:
    """Held-out precision@10 photo by photo and by product (exact and at the calibrated
    probes), answers repeating a product; the product index."""
    from vasrch.catalog.products import Products
    from vasrch.config import ClusteringConfig, EvaluationConfig, SearchConfig
    from vasrch.index.evaluation import precision_at_k
    from vasrch.index.training import HeldOut, diagnose, evaluate_index, fit_index

    cat = pd.DataFrame({"image_id": catalog.ids}).merge(
        manifest.rename(columns={"image": "image_id"}), on="image_id"
    )
    products = Products.from_catalog(cat)
    k = diagnose(catalog.vectors, ClusteringConfig().diagnostics).suggested_k
    plain, _ = fit_index(
        catalog.ids, catalog.vectors, k, "fp", ClusteringConfig(), None, SearchConfig()
    )
    by_product = plain.with_products(products)
    labels = pd.Series(catalog.classes, index=catalog.ids)
    q = by_product.prepare_queries(queries.vectors)
    out = {"catalog photos": len(catalog.ids), "products": products.metadata.shape[0], "k": k}
    for name, index in (("photo", plain), ("product", by_product)):
        exact = index.exact()
        rows, scores = exact.search_rows(q, TOP, 1)
        result = exact.result_of(rows, scores)
        owners = products.of(result.ids.ravel()).reshape(result.ids.shape)
        repeats = sum(len(r) - len(set(r)) for r in owners.tolist())
        out[f"{name}-level precision@10 (exact)"] = precision_at_k(
            result, queries.classes, labels, TOP
        )
        held_out = HeldOut(
            queries.ids, queries.vectors, pd.Series(queries.classes, index=queries.ids)
        )
        metrics = evaluate_index(
            index,
            catalog.ids,
            catalog.vectors,
            labels,
            SearchConfig(),
            EvaluationConfig(),
            held_out,
        ).figures()
        out[f"{name}-level precision@10 (probes {int(metrics['probes'])})"] = metrics[
            "held_out_precision_at_10"
        ]
        out[f"{name}-level answers repeating a product"] = repeats
    out["calibrated probes (product index)"] = int(metrics["probes"])
    return out, by_product, products


def joined(results: list) -> object:
    """One SearchResult of many single-query results."""
    from vasrch.index.search_index import SearchResult

    return SearchResult(
        np.concatenate([r.ids for r in results]), np.concatenate([r.scores for r in results])
    )


def filtered(index, products, queries, calibrated: int) -> dict:
    """recall@10 of filtered searches against exact filtered search, and search latency, at the
    run's `calibrated` probes."""
    from vasrch.config import SearchConfig
    from vasrch.index.evaluation import recall_at_k
    from vasrch.search.parameters import resolve_search_params

    probes = resolve_search_params(
        k=index.k, n=index.n, configured=SearchConfig(), calibrated=calibrated
    ).probes
    rng = np.random.default_rng(0)
    categories = sorted(products.metadata["category"].unique())
    q = index.prepare_queries(queries.vectors)
    out = {"probes": probes}
    for label, size in (("one category", 1), ("two categories", 2)):
        picks = [list(rng.choice(categories, size, replace=False)) for _ in range(len(q))]
        found, truth, times = [], [], []
        for i, pick in enumerate(picks):
            allowed = products.allowed(index.ids, {"category": pick})
            with threadpool_limits(1, "blas"):  # as the query service searches
                start = time.perf_counter()
                rows, scores = index.search_rows(q[i : i + 1], TOP, probes, allowed=allowed)
                times.append(time.perf_counter() - start)
            found.append(index.result_of(rows, scores))
            exact_rows, exact_scores = index.exact().search_rows(
                q[i : i + 1], TOP, 1, allowed=allowed
            )
            truth.append(index.result_of(exact_rows, exact_scores))
        recall = recall_at_k(joined(found), joined(truth), TOP)
        full = np.mean([(r.ids != "").sum() == TOP for r in found])
        out[f"{label}: recall@10 vs exact filtered"] = recall
        out[f"{label}: answers with 10 products"] = full
        out[f"{label}: search p50 ms"] = 1000 * float(np.percentile(times, 50))
        out[f"{label}: search p95 ms"] = 1000 * float(np.percentile(times, 95))
    return out


def whole_query_latency(work: Path, workspace: Path, manifest: Path, test: Path, products) -> dict:
    """Decode + embed + filtered search of one photo at a time with a trained run (warm)."""
    import yaml

    from vasrch.orchestration.flows.train import train_flow
    from vasrch.search.searcher import embed_files, open_run

    config = work / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"path": str(work / "catalog"), "manifest": str(manifest)},
                "workspace": str(workspace),
                "bulk": {"enabled": False},
            }
        )
    )
    train_flow(str(config))
    searcher = open_run(workspace)
    backbone = searcher.backbone(batch_size=1)
    files = sorted(test.glob("*/*.jpg"))[:LATENCY_QUERIES]
    categories = sorted(products.metadata["category"].unique())
    times = []
    for i, f in enumerate([files[0], *files]):
        start = time.perf_counter()
        vectors, _, _ = embed_files([f], backbone)
        with threadpool_limits(1, "blas"):
            searcher.search_vectors(vectors, TOP, filters={"category": [categories[i % 10]]})
        if i:
            times.append(time.perf_counter() - start)
    return {
        "whole query (decode+embed+filtered search) p50 ms": 1000 * float(np.median(times)),
        "whole query p95 ms": 1000 * float(np.percentile(times, 95)),
    }


def manifest_scan(work: Path, photos: list[Path]) -> dict:
    """First scan and rescan of a 100,000-row manifest of hard links to the photos."""
    from vasrch.catalog.scan import ScanOptions, scan_catalog

    root = work / "links"
    if root.exists():
        shutil.rmtree(root)
    rows = []
    for i in range(MANIFEST_ROWS):
        rel = f"f{i % 100:03d}/{i:06d}.jpg"
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(photos[i % len(photos)], target)
        rows.append({"product_id": f"P{i // 3:06d}", "image": rel, "category": f"c{i % 10}"})
    path = work / "links.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    options = ScanOptions(manifest=path)
    start = time.perf_counter()
    first = scan_catalog(root, options=options)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = scan_catalog(root, first.table, options)
    again_s = time.perf_counter() - start
    assert len(first.table) == len(again.table) == MANIFEST_ROWS
    return {"manifest rows": MANIFEST_ROWS, "first scan s (hash all)": first_s, "rescan s": again_s}


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vasrch-products-"))
    print(f"load average {os.getloadavg()}; work folder {work}")
    manifest = make_products(args.dataset / "train", work / "catalog")
    manifest_path = work / "products.csv"
    manifest.to_csv(manifest_path, index=False)
    catalog = embed_split(work / "catalog", args.workspace)
    queries = embed_split(args.dataset / "test", args.workspace)
    figures = originals_precision(catalog, queries)
    quality_figures, index, products = quality(catalog, queries, manifest)
    figures |= quality_figures
    figures |= filtered(index, products, queries, figures["calibrated probes (product index)"])
    figures |= whole_query_latency(
        work, args.workspace, manifest_path, args.dataset / "test", products
    )
    # the links and the photos must share a filesystem
    figures |= manifest_scan(work, sorted((work / "catalog").glob("*/*.jpg")))
    for name, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{name:55s} {shown}")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
