"""From catalog vectors to a search model: diagnostics, KMeans + index, and its evaluation."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from vasrch.clustering import Projection, fit_pca, plot_sweep, suggest_k, sweep_k, train_kmeans
from vasrch.config import ClusteringConfig, DiagnosticsConfig
from vasrch.evaluation import precision_at_k, recall_at_k, sample_queries
from vasrch.fileio import atomic_path, write_text_atomic
from vasrch.index import SearchIndex, brute_force, build_index
from vasrch.layout import DiagnosticsLayout


@dataclass(frozen=True)
class Diagnostics:
    """The k sweep (k, inertia, silhouette), its suggested k and the rule that chose it."""

    sweep: pd.DataFrame
    suggested_k: int
    rule: str


def sweep_values(diag: DiagnosticsConfig, n: int, max_clusters: int | None = None) -> list[int]:
    """The k values to sweep: k_min..k_max by k_step, capped by max_clusters and n - 1."""
    top = min(diag.k_max, max_clusters or diag.max_clusters, diag.max_clusters)
    if top >= n:
        warnings.warn(
            f"the sweep's largest k ({top}) is not below the number of images ({n}); "
            f"sweeping up to {n - 1}",
            stacklevel=2,
        )
        top = n - 1
    ks = list(range(diag.k_min, top + 1, diag.k_step))
    if not ks:
        raise ValueError(
            f"no k to sweep between k_min={diag.k_min} and {top} for {n} images; "
            "lower clustering.diagnostics.k_min or add images"
        )
    return ks


def diagnose(
    vectors: np.ndarray,
    diag: DiagnosticsConfig,
    seed: int = 0,
    n_components: int | None = None,
    minibatch_above: int = 20_000,
) -> Diagnostics:
    """Sweep k on a seeded sample of at most `diag.sample` vectors (PCA first when asked)."""
    x = vectors
    if len(x) > diag.sample:
        x = x[sample_queries(len(x), diag.sample, seed)]
    n_components = diag.n_components or n_components
    if n_components:
        x = fit_pca(x, n_components, seed).transform(x)
    # one BLAS/OpenMP thread: on a busy 2-core machine their threads spin against each other
    # (the sweep on clothing-small took 63 s with the defaults, 19 s with one thread)
    with threadpool_limits(1):
        sweep = sweep_k(
            x, sweep_values(diag, len(x)), seed, diag.silhouette_sample, minibatch_above
        )
    return Diagnostics(sweep, suggest_k(sweep, diag.rule), diag.rule)


def save_diagnostics(diag: Diagnostics, folder: DiagnosticsLayout) -> Path:
    """Write sweep.parquet, suggested_k.json and the elbow/silhouette plot; return the plot."""
    folder.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder.sweep) as tmp:
        diag.sweep.to_parquet(tmp, index=False)
    write_text_atomic(
        folder.suggested_k, json.dumps({"suggested_k": diag.suggested_k, "rule": diag.rule})
    )
    return plot_sweep(diag.sweep, diag.suggested_k, folder.plot)


def choose_k(cfg: ClusteringConfig, suggested: int | None, n: int) -> int:
    """The configured k, or the suggestion for `auto`; clamped to the number of images."""
    if cfg.num_clusters == "auto":
        if suggested is None:
            raise ValueError("num_clusters is auto but no suggestion was made")
        k = suggested
    else:
        k = cfg.num_clusters
    if k > n:
        warnings.warn(f"num_clusters {k} is more than the {n} images; using {n}", stacklevel=2)
        k = n
    return k


def fit_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    k: int,
    fingerprint: str,
    cfg: ClusteringConfig,
    init_centroids: np.ndarray | None = None,
) -> tuple[SearchIndex, object]:
    """(search index, fitted scikit-learn KMeans): optional PCA, then KMeans on unit vectors."""
    projection: Projection | None = None
    x = vectors
    if cfg.n_components:
        projection = fit_pca(vectors, cfg.n_components, cfg.seed)
        x = projection.transform(vectors)
    model = train_kmeans(
        x,
        k,
        cfg.seed,
        cfg.minibatch_above,
        init_centroids=init_centroids,
        max_train_rows=cfg.max_train_rows,
    )
    labels = model.predict(x)
    index = build_index(ids, vectors, model.cluster_centers_, labels, fingerprint, projection)
    return index, model


def catalog_labels(catalog: pd.DataFrame, labels_csv: Path | None = None) -> pd.Series | None:
    """image_id -> label, from a CSV (image_id,label) or else from the first folder of each id
    when every image sits in a class folder; None when there are no labels."""
    if labels_csv is not None:
        table = pd.read_csv(labels_csv, dtype=str)
        missing = {"image_id", "label"} - set(table.columns)
        if missing:
            raise ValueError(f"{labels_csv}: needs columns image_id,label (missing {missing})")
        return table.set_index("image_id")["label"]
    parts = catalog["image_id"].str.split("/")
    if len(catalog) == 0 or (parts.str.len() < 2).any():
        return None
    labels = pd.Series(parts.str[-2].to_numpy(), index=catalog["image_id"].to_numpy())
    return labels if labels.nunique() > 1 else None


def evaluate_index(
    index: SearchIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    probes: int | str,
    sample: int,
    seed: int = 0,
    labels: pd.Series | None = None,
    target_recall: float = 0.95,
    max_probes: int | None = None,
) -> dict[str, float]:
    """recall@10 of the index against exact search on sampled catalog queries (each excluding
    itself); with labels, leave-one-out precision@5 and @10 of the index and of exact search.

    With probes "auto" the probes are calibrated: the fewest (1, 2, ... up to `max_probes`)
    whose recall@10 reaches `target_recall` on the sample, as FAISS users tune nprobe; the
    result's "probes" is what the run's queries and bulk jobs use by default."""
    rows = sample_queries(len(ids), sample, seed)
    queries, qids = vectors[rows], list(ids[rows])
    top = 10
    exact_vectors = index.prepare_queries(vectors)
    exact = brute_force(index.prepare_queries(queries), ids, exact_vectors, top, exclude_ids=qids)
    most = min(index.k, max_probes or index.k)
    candidates = range(1, most + 1) if probes == "auto" else [min(int(probes), index.k)]
    for p in candidates:
        approx = index.search(queries, top, p, exclude_ids=qids)
        recall = recall_at_k(approx, exact, top)
        if recall >= target_recall:
            break
    metrics = {
        "queries": float(len(rows)),
        "probes": float(p),
        "recall_at_10": recall,
    }
    if labels is not None:
        qlabels = labels.reindex(qids).to_numpy(dtype=object)
        for k in (5, 10):
            metrics[f"precision_at_{k}"] = precision_at_k(approx, qlabels, labels, k)
            metrics[f"exact_precision_at_{k}"] = precision_at_k(exact, qlabels, labels, k)
    return metrics
