"""An index of N catalog-like photos under the default memory budget, side by side with FAISS.

    python benchmarks/bench_scale.py --n 1000000 [--json FILE] [--no-faiss]

The vectors come from the generator fitted on clothing-small's real features
(catalog_vectors; bench_quality's extraction, cached in --workspace), streamed in chunks into a
float32 .npy under bench-work/scale-N/ (N x 1,280 x 4 bytes: 5.1 GB at 1M), with fresh
held-out queries from another seed. k is the run's own choice (vasrch's diagnose: the k sweep
on a sample of 20,000, scaled to N and capped by `max_clusters: auto`; k_reason says how,
diagnostics_s how long, not counted in train_s). The index is built by vasrch's own streamed train
(fit_index with a scratch folder): spherical k-means on a sample of 100,000, every photo
assigned to its nearest centroid a chunk at a time, the full vectors grouped by cluster into a
file on disk, and the vectors held as `search.max_bytes_per_photo: auto` chooses (compressed
above 200,000 photos: PCA int8 codes in memory, shortlists re-ranked from the memory-mapped
float32 file). Centring, augmentation and
expansion are left out here (they are quality steps, measured on real photos by bench_heldout).

Printed and written as JSON:
- index_bytes_per_photo: the served index's resident arrays (codes, ids with their lookup,
  offsets, distances, centroids, codec) summed by nbytes, / N; rss_bytes_per_photo: the
  process's RSS growth from before the index was built to after the searches, / N (it counts
  the file pages the re-ranking touched, which the kernel may drop);
- train_s: sampling + k-means + assignment + grouping + codec + codes + probe calibration
  (fewest probes reaching recall@10 0.95 on the held-out queries, as a run calibrates);
- recall_at_10 at those probes against exact float32 search (float32_recall_at_10: the same
  IVF at the same probes searching the float32 vectors, what compression costs apart);
  search_p95_ms: one query at a time, one thread; bulk_s: top-10 of every photo (as a bulk
  job, no prints), timed on a sample of the clusters and scaled to N (bulk_measured_rows says
  how many were timed);
- faiss: IVF-PQ (320 bytes, 8-bit) and IVF-SQ8 on the same vectors, k and probes: build
  seconds, resident bytes per photo (serialized size), p95, recall@10.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATASET, embed_split
from catalog_vectors import fit, generate

TOP = 10
TARGET = 0.95
MAX_PROBES = 64
SAMPLE_ROWS = 100_000
ASSIGN_ROWS = 65_536  # rows FAISS adds at once


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, required=True, help="synthetic catalog photos")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--queries", type=int, default=500, help="held-out queries")
    p.add_argument("--bulk-share", type=float, default=0.02, help="share of photos bulk times")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument(
        "--max-bytes-per-photo", default="auto", help="the budget (default auto, as a run's)"
    )
    p.add_argument("--model-clusters", type=int, default=16, help="the generator's clusters")
    p.add_argument("--grouping", type=float, default=0.0, help="the generator's grouping")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--workspace", type=Path, default=Path("bench-work/quality-ws"))
    p.add_argument("--work", type=Path, default=Path("bench-work"))
    return p.parse_args()


def write_vectors(path: Path, model, n: int, seed: int) -> np.ndarray:
    """The generator's n vectors streamed into a float32 .npy; returned memory-mapped."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, model.dim))
    start = 0
    for chunk in generate(model, n, seed):
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def choose_k(vectors: np.ndarray, seed: int = 0):
    """The run's own k for these vectors: the k sweep on its sample, scaled to the catalog and
    capped as `clustering.diagnostics` defaults say (diagnose); the Diagnostics."""
    from vasrch.config import ClusteringConfig
    from vasrch.index.training import diagnose

    c = ClusteringConfig(max_train_rows=SAMPLE_ROWS, seed=seed)
    return diagnose(vectors, c.diagnostics, c.seed, c.n_components, c.minibatch_above, SAMPLE_ROWS)


def build(vectors: np.ndarray, folder: Path, k: int, budget: int | str, seed: int = 0):
    """The index of `vectors` held within `budget`, trained as a run trains a catalog of this
    size (fit_index streamed through scratch files; see the module docstring)."""
    from vasrch.config import ClusteringConfig, SearchConfig
    from vasrch.index.training import fit_index

    ids = np.array([f"img{i:09d}" for i in range(len(vectors))], dtype=object)
    search = SearchConfig(
        centre=False, database_augmentation=0, query_expansion=0, max_bytes_per_photo=budget
    )
    clustering = ClusteringConfig(max_train_rows=SAMPLE_ROWS, seed=seed)
    index, _ = fit_index(
        ids, vectors, k, "bench", clustering, search=search, scratch=folder / "scratch"
    )
    return index


def resident_bytes(index) -> int:
    """nbytes of what the served index keeps in memory (not the memory-mapped vectors)."""
    index.rows_of(["img000000000"])  # builds the id lookup a server uses
    arrays = [index.offsets, index.distances, index.centroids]
    if index.codes is None:
        arrays.append(index.vectors)
    else:
        c = index.codec
        arrays += [index.codes, c.mean, c.components, c.low, c.step]
    return int(sum(a.nbytes for a in arrays)) + index.ids.nbytes


def overlap(found: np.ndarray, exact: np.ndarray) -> float:
    """recall@10: the mean share of each query's exact top 10 among its answers."""
    return float(np.mean([len(set(a) & set(e)) / TOP for a, e in zip(found, exact, strict=True)]))


def calibrate(index, queries: np.ndarray, exact_rows: np.ndarray) -> tuple[int, float]:
    """Fewest probes whose recall@10 reaches TARGET (and that recall)."""
    recall = 0.0
    for probes in range(1, MAX_PROBES + 1):
        rows, _ = index.search_rows(queries, TOP, probes)
        recall = overlap(rows, exact_rows)
        if recall >= TARGET:
            return probes, recall
    return MAX_PROBES, recall


def p95_ms(search, queries: np.ndarray) -> float:
    """95th percentile of one query at a time, after a warm-up."""
    search(queries[:1])
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q[None, :])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 95))


def faiss_side(kind: str, grouped: np.ndarray, centroids, queries, exact_rows, probes: int) -> dict:
    """Build a FAISS IVF index of the same vectors on the same centroids; its figures."""
    import faiss

    n, dim = grouped.shape
    k = len(centroids)
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)  # unit centroids: the same order as vasrch's probes
    quantizer.add(np.ascontiguousarray(centroids))
    if kind == "IVF-PQ320":
        index = faiss.IndexIVFPQ(quantizer, dim, k, 320, 8, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, k, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(n, SAMPLE_ROWS), replace=False))
    index.train(np.ascontiguousarray(grouped[sample]))
    for s in range(0, n, ASSIGN_ROWS):
        index.add(np.ascontiguousarray(grouped[s : s + ASSIGN_ROWS]))
    build_s = time.perf_counter() - start
    index.nprobe = probes
    _, found = index.search(np.ascontiguousarray(queries), TOP)
    recall = overlap(found, exact_rows)
    faiss.omp_set_num_threads(1)
    p95 = p95_ms(lambda q: index.search(q, TOP), queries)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    size = len(faiss.serialize_index(index))
    return {
        "build_s": build_s,
        "bytes_per_photo": size / n,
        "search_p95_ms": p95,
        "recall_at_10": recall,
        "probes": probes,
    }


def main() -> int:
    args = parse_args()
    if not args.no_faiss:
        try:
            import faiss  # noqa: F401
        except ImportError:
            sys.exit('faiss is not installed: pip install -e ".[bench]", or pass --no-faiss')
    from vasrch.bulk.neighbours import bulk_neighbours_for_clusters
    from vasrch.index.compression import shortlist_size

    folder = args.work / f"scale-{args.n}"
    folder.mkdir(parents=True, exist_ok=True)
    train = embed_split(args.dataset / "train", args.workspace)
    model = fit(train.vectors, args.model_clusters, grouping=args.grouping)
    start = time.perf_counter()
    vectors = write_vectors(folder / "vectors.npy", model, args.n, seed=1)
    generate_s = time.perf_counter() - start
    queries = np.concatenate(list(generate(model, args.queries, seed=2)))
    load_start = os.getloadavg()[0]
    rss0 = psutil.Process().memory_info().rss
    start = time.perf_counter()
    diag = choose_k(vectors)
    diagnostics_s = time.perf_counter() - start
    k = diag.suggested_k
    start = time.perf_counter()
    budget = "auto" if args.max_bytes_per_photo == "auto" else int(args.max_bytes_per_photo)
    index = build(vectors, folder, k, budget)
    del vectors
    exact_rows, _ = index.exact().search_rows(queries, TOP, 1)
    probes, recall = calibrate(index, queries, exact_rows)
    train_s = time.perf_counter() - start
    plain = replace(index, codes=None, codec=None)  # the same IVF, float32 (the file, mapped)
    float32_recall = overlap(plain.search_rows(queries, TOP, probes)[0], exact_rows)
    with threadpool_limits(1):
        search_p95 = p95_ms(lambda q: index.search_rows(q, TOP, probes), queries)
        sizes = index.cluster_sizes
        chosen = np.random.default_rng(0).permutation(index.k)
        upto = int(np.searchsorted(np.cumsum(sizes[chosen]), args.bulk_share * index.n)) + 1
        clusters = sorted(chosen[:upto].tolist())
        start = time.perf_counter()
        bulk_neighbours_for_clusters(index, clusters, TOP, probes)
        bulk_rows = int(sizes[clusters].sum())
        bulk_s = (time.perf_counter() - start) * index.n / bulk_rows
    rss = psutil.Process().memory_info().rss - rss0
    figures = {
        "n": args.n,
        "generator": {"clusters": args.model_clusters, "grouping": args.grouping},
        "dim": index.input_dim,
        "k": index.k,
        "k_reason": diag.reason,
        "diagnostics_s": diagnostics_s,
        "storage": index.storage.method,
        "storage_reason": index.storage.reason,
        "index_bytes_per_photo": resident_bytes(index) / args.n,
        "index_bytes_measured_as": "sum of resident arrays' nbytes",
        "rss_bytes_per_photo": rss / args.n,
        "probes": probes,
        "shortlist": shortlist_size(index.n, index.k, TOP, probes)
        if index.codes is not None
        else 0,
        "recall_at_10": recall,
        "float32_recall_at_10": float32_recall,
        "search_p95_ms": search_p95,
        "train_s": train_s,
        "bulk_s": bulk_s,
        "bulk_measured_rows": bulk_rows,
        "generate_s": generate_s,
        "load_average": [load_start, os.getloadavg()[0]],
    }
    report(figures, args.json)
    if not args.no_faiss:
        figures["faiss"] = {}
        for kind in ("IVF-PQ320", "IVF-SQ8"):
            figures["faiss"][kind] = faiss_side(
                kind, index.vectors, index.centroids, queries, exact_rows, probes
            )
            report(figures, args.json)
    return 0


def report(figures: dict, path: Path | None) -> None:
    """Print the figures so far and write them to `path`: a long run keeps what it measured."""
    print(json.dumps(figures, indent=2), flush=True)
    if path:
        path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
