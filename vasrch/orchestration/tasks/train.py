"""Tasks of the train stage: vectors, diagnostics, KMeans index, evaluation, publishing a run."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from vasrch.atomic_files import atomic_path
from vasrch.catalog.products import Products
from vasrch.catalog.sources import Fetching
from vasrch.config import ClusteringConfig, EvaluationConfig, FeaturesConfig, SearchConfig
from vasrch.errors import DataError
from vasrch.features.backbones import BackboneSpec, load_backbone
from vasrch.features.extraction import load_prints, load_vectors
from vasrch.features.shopper_photos import simulate_shopper_photos
from vasrch.index.evaluation import sample_queries
from vasrch.index.figures import Evaluation
from vasrch.index.search_index import SearchIndex, load_index, save
from vasrch.index.training import (
    Diagnostics,
    HeldOut,
    SimulatedQueries,
    diagnose,
    evaluate_index,
    fit_index,
    held_out_photos,
    save_diagnostics,
)
from vasrch.layout import DiagnosticsLayout, RunLayout
from vasrch.pages.file_server import link_to
from vasrch.workspace import runs
from vasrch.workspace.run_manifest import RunManifest, RunRecord


@dataclass(frozen=True)
class CatalogVectors:
    """The catalog's embedded images, in one order: ids, feature vectors, duplicate prints."""

    ids: np.ndarray
    vectors: np.ndarray
    prints: np.ndarray


@task(name="load-vectors", cache_policy=NO_CACHE)
def load_vectors_task(
    cache_dir: str, catalog: pd.DataFrame, spill: str | None = None
) -> CatalogVectors:
    """The catalog's embedded images from the feature cache (the vectors into the .npy file
    `spill` when given and the duplicate prints into prints.npy beside it, memory-mapped);
    fewer than 2 is an error."""
    ids, vectors = load_vectors(Path(cache_dir), catalog, None if spill is None else Path(spill))
    get_run_logger().info("%d vectors of dimension %d", *vectors.shape)
    if len(ids) < 2:
        raise DataError(
            f"only {len(ids)} images could be embedded; a search index needs at least 2 "
            "(see the rejected images in the extraction summary)"
        )
    _, prints = load_prints(
        Path(cache_dir), catalog, None if spill is None else Path(spill).with_name("prints.npy")
    )
    return CatalogVectors(ids, vectors, prints)


@task(name="diagnostics", cache_policy=NO_CACHE)
def diagnostics_task(
    vectors: np.ndarray, clustering: ClusteringConfig, out_dir: str
) -> Diagnostics:
    """Sweep k, save the sweep, the suggestion and the plot; publish them as artifacts."""
    c = clustering
    diag = diagnose(
        vectors, c.diagnostics, c.seed, c.n_components, c.minibatch_above, c.max_train_rows
    )
    if diag.note:
        get_run_logger().warning(diag.note)
    save_diagnostics(diag, DiagnosticsLayout(Path(out_dir)))
    create_table_artifact(
        key="k-sweep",
        table=diag.sweep.round(5).to_dict("records"),
        description=f"k sweep; suggested k = {diag.suggested_k} ({diag.rule} rule)",
    )
    get_run_logger().info("suggested k = %d: %s", diag.suggested_k, diag.reason)
    return diag


@task(name="train-index", cache_policy=NO_CACHE)
def train_index_task(
    *,
    vectors: CatalogVectors,
    k: int,
    fingerprint: str,
    clustering: ClusteringConfig,
    search: SearchConfig,
    run_dir: str,
    products: Products,
    init_centroids: np.ndarray | None = None,
    scratch: str | None = None,
) -> SearchIndex:
    """Fit the index (centring or PCA, KMeans, augmentation, expansion, duplicate prints)
    answering with distinct products; save it and the scikit-learn model into the run. With a
    `scratch` folder the fit is streamed through files there (fit_index), and the index
    returned is the saved one, memory-mapped from the run."""
    index, model = fit_index(
        vectors.ids,
        vectors.vectors,
        k,
        fingerprint,
        clustering,
        init_centroids=init_centroids,
        search=search,
        prints=vectors.prints,
        scratch=None if scratch is None else Path(scratch),
    )
    index = index.with_products(products)
    run = RunLayout(Path(run_dir))
    save(index, run.index.root)
    with atomic_path(run.model) as tmp:
        joblib.dump(model, tmp)
    get_run_logger().info("trained k=%d on %d images", index.k, index.n)
    return index if scratch is None else load_index(run.index.root, fingerprint)


@task(name="held-out-photos", cache_policy=NO_CACHE)
def held_out_task(
    queries: pd.DataFrame, catalog: pd.DataFrame, cache_dir: str, labels_csv: Path | None
) -> HeldOut:
    """The held-out photos' vectors and labels (see vasrch.index.training.held_out_photos)."""
    held_out = held_out_photos(queries, catalog, Path(cache_dir), labels_csv)
    get_run_logger().info("%d held-out photos for evaluation", len(held_out.ids))
    return held_out


@task(name="simulated-shopper-photos", cache_policy=NO_CACHE)
def simulated_queries_task(
    catalog: pd.DataFrame, ids: np.ndarray, features: FeaturesConfig, evaluation: EvaluationConfig
) -> SimulatedQueries:
    """Simulated shopper photos of `evaluation.simulated_queries` sampled catalog photos,
    embedded with the run's backbone (vasrch.features.shopper_photos)."""
    chosen = ids[sample_queries(len(ids), evaluation.simulated_queries, evaluation.seed)]
    paths = catalog.set_index("image_id")["path"].reindex(chosen).to_list()
    spec = BackboneSpec.from_config(features)
    kept, pixels = simulate_shopper_photos(
        paths, spec.input_size, evaluation.seed, features.max_pixels
    )
    vectors = load_backbone(spec, features.batch_size, features.device).embed(pixels)
    get_run_logger().info("%d simulated shopper photos for calibrating probes", len(kept))
    return SimulatedQueries(chosen[kept], vectors)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    index: SearchIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    labels: pd.Series | None,
    search: SearchConfig,
    evaluation: EvaluationConfig,
    held_out: HeldOut | None = None,
    simulated: SimulatedQueries | None = None,
) -> Evaluation:
    """Calibrated probes, leave-one-out and held-out figures; a table artifact of them."""
    result = evaluate_index(index, ids, vectors, labels, search, evaluation, held_out, simulated)
    create_table_artifact(
        key="search-quality",
        table=[{"figure": k, "value": round(v, 4)} for k, v in result.figures().items()],
        description="leave_one_out_*: catalog photos as queries, each left out of its own "
        "answers; held_out_*: photos not in the catalog (evaluation.queries); recall against "
        f"exact search, precision against classes. Probes calibrated on {result.calibrated_on}.",
    )
    get_run_logger().info("%d probes calibrated on %s", result.probes, result.calibrated_on)
    return result


@task(name="publish-run", cache_policy=NO_CACHE)
def publish_run_task(
    *, staging: str, workspace: str, record: RunRecord, parent_run: str | None
) -> RunManifest:
    """Complete the run folder (hashes, manifest, rename) and, if the record passed its gates,
    point LATEST at it; returns the manifest as written."""
    final = runs.complete_run(Path(staging), record, parent_run=parent_run)
    if record.promoted:
        runs.set_latest(Path(workspace), final.name)
    promoted = " and promoted to LATEST" if record.promoted else ""
    get_run_logger().info("run %s complete%s", final, promoted)
    return runs.read_manifest(final, verify=False)


@task(name="report", cache_policy=NO_CACHE)
def report_task(
    run_dir: str,
    catalog: pd.DataFrame,
    diag: Diagnostics,
    k: int,
    evaluation: Evaluation,
    title: str,
    fetching: Fetching | None = None,
) -> str:
    """report.html in the run folder (see vasrch.pages.report.write_run_report)."""
    from vasrch.pages.report import write_run_report

    run = RunLayout(Path(run_dir))
    return str(write_run_report(run, catalog, diag, k, evaluation, title, fetching))


@task(name="run-artifacts", cache_policy=NO_CACHE)
def run_artifacts_task(run_dir: str, diag: Diagnostics) -> None:
    """Artifacts that point into the published run: the k plot shown in the UI itself (an
    embedded PNG) and a link to the report that opens (vasrch.pages.file_server.link_to)."""
    run = RunLayout(Path(run_dir))
    plot = base64.b64encode(run.diagnostics.plot.read_bytes()).decode("ascii")
    note = f"\n\n{diag.note}" if diag.note else ""
    create_markdown_artifact(
        key="elbow-silhouette-plot",
        markdown=f"Suggested k = **{diag.suggested_k}** (rule: {diag.rule}){note}\n\n"
        f"![elbow and silhouette](data:image/png;base64,{plot})",
        description=f"k sweep of run {run.run_id}",
    )
    create_link_artifact(
        key="run-report", link=link_to(run.report), link_text=f"report of run {run.run_id}"
    )
