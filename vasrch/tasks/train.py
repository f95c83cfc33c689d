"""Tasks of the train stage: vectors, diagnostics, KMeans index, evaluation, publishing a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from vasrch import runs
from vasrch.clustering import plot_sweep
from vasrch.config import Config
from vasrch.features import load_vectors
from vasrch.fileio import atomic_path, write_text_atomic
from vasrch.index import SearchIndex, save
from vasrch.training import Diagnostics, catalog_labels, diagnose, evaluate_index, fit_index


@task(name="load-vectors", cache_policy=NO_CACHE)
def load_vectors_task(cache_dir: str, catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ids, vectors = load_vectors(Path(cache_dir), catalog)
    get_run_logger().info("%d vectors of dimension %d", *vectors.shape)
    if len(ids) < 2:
        raise ValueError(
            f"only {len(ids)} images could be embedded; a search index needs at least 2 "
            "(see the rejected images in the extraction summary)"
        )
    return ids, vectors


@task(name="diagnostics", cache_policy=NO_CACHE)
def diagnostics_task(vectors: np.ndarray, cfg: Config, out_dir: str) -> Diagnostics:
    """Sweep k, save sweep.parquet, suggested_k.json and the plot; publish them as artifacts."""
    c = cfg.clustering
    diag = diagnose(vectors, c.diagnostics, c.seed, c.n_components, c.minibatch_above)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sweep.parquet") as tmp:
        diag.sweep.to_parquet(tmp, index=False)
    write_text_atomic(
        out / "suggested_k.json", json.dumps({"suggested_k": diag.suggested_k, "rule": diag.rule})
    )
    png = plot_sweep(diag.sweep, diag.suggested_k, out / "elbow_silhouette.png")
    create_table_artifact(
        key="k-sweep",
        table=diag.sweep.round(5).to_dict("records"),
        description=f"k sweep; suggested k = {diag.suggested_k} ({diag.rule} rule)",
    )
    create_markdown_artifact(
        key="elbow-silhouette-plot",
        markdown=f"Elbow and silhouette plot: `{png}`\n\nSuggested k = **{diag.suggested_k}** "
        f"(rule: {diag.rule})",
    )
    create_link_artifact(
        key="elbow-silhouette-png", link=png.resolve().as_uri(), link_text=png.name
    )
    get_run_logger().info("suggested k = %d (%s rule)", diag.suggested_k, diag.rule)
    return diag


@task(name="train-index", cache_policy=NO_CACHE)
def train_index_task(
    ids: np.ndarray,
    vectors: np.ndarray,
    k: int,
    fingerprint: str,
    cfg: Config,
    run_dir: str,
    init_centroids: np.ndarray | None = None,
) -> SearchIndex:
    """Fit KMeans (+ optional PCA), save the index and the scikit-learn model into the run."""
    index, model = fit_index(ids, vectors, k, fingerprint, cfg.clustering, init_centroids)
    save(index, Path(run_dir) / "index")
    with atomic_path(Path(run_dir) / "model.joblib") as tmp:
        joblib.dump(model, tmp)
    get_run_logger().info("trained k=%d on %d images", index.k, index.n)
    return index


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    index: SearchIndex, ids: np.ndarray, vectors: np.ndarray, catalog: pd.DataFrame, cfg: Config
) -> dict[str, float]:
    labels = catalog_labels(catalog, cfg.catalog.labels_csv)
    metrics = evaluate_index(
        index,
        ids,
        vectors,
        cfg.search.probes,
        cfg.evaluation.sample,
        cfg.evaluation.seed,
        labels,
        cfg.search.target_recall,
        cfg.search.max_probes,
    )
    create_table_artifact(
        key="search-quality",
        table=[{"metric": k, "value": round(v, 4)} for k, v in metrics.items()],
        description="recall@10 against exact search; precision@k when classes are known",
    )
    return metrics


@task(name="publish-run", cache_policy=NO_CACHE)
def publish_run_task(staging: str, workspace: str, manifest: dict[str, Any], promote: bool) -> str:
    """Complete the run folder (hashes, manifest, rename) and, if `promote`, point LATEST at it."""
    final = runs.complete_run(Path(staging), manifest)
    if promote:
        runs.set_latest(Path(workspace), final.name)
    get_run_logger().info("run %s complete%s", final, " and promoted to LATEST" if promote else "")
    return str(final)


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    run_dir: str, catalog: pd.DataFrame, diag: Diagnostics, k: int, metrics: dict, title: str
) -> str:
    """report.html in the run folder: plot, cluster sizes and samples, neighbours, duplicates.
    Sample queries come from the first neighbour shard, so the report stays bounded."""
    from vasrch.report import write_report
    from vasrch.tasks.bulk import neighbour_shards

    run = Path(run_dir)
    shards = neighbour_shards(run / "bulk")
    dup_path = run / "bulk" / "duplicates.parquet"
    path = write_report(
        run,
        title=title,
        sweep=diag.sweep,
        suggested_k=diag.suggested_k,
        chosen_k=k,
        assignments=pd.read_parquet(run / "index" / "assignments.parquet"),
        paths=dict(zip(catalog["image_id"], catalog["path"], strict=True)),
        neighbours=pd.read_parquet(shards[0]) if shards else None,
        duplicates=pd.read_parquet(dup_path) if dup_path.is_file() else None,
        metrics=metrics,
        elbow_png="diagnostics/elbow_silhouette.png",
    )
    create_link_artifact(key="run-report", link=path.resolve().as_uri(), link_text="report.html")
    return str(path)
