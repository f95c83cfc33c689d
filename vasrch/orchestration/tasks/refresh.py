"""Tasks of the refresh stage: the index on the trained clusters, its drift, the artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from vasrch.catalog.changes import CatalogChanges
from vasrch.catalog.products import Products
from vasrch.config import EvaluationConfig, RefreshConfig, SearchConfig
from vasrch.index.figures import Drift
from vasrch.index.incremental import measure_drift, refresh_index, size_spread
from vasrch.index.search_index import SearchIndex, load_index, save
from vasrch.index.training import recheck_recall
from vasrch.layout import RunLayout
from vasrch.orchestration.tasks.train import CatalogVectors
from vasrch.workspace.run_manifest import RunManifest


@task(name="refresh-index", cache_policy=NO_CACHE)
def refresh_index_task(
    *,
    parent_index_dir: str,
    vectors: CatalogVectors,
    search: SearchConfig,
    products: Products,
    run_dir: str,
    scratch: str | None = None,
) -> SearchIndex:
    """The catalog's photos on the parent run's clusters (vasrch.index.incremental), answering
    with distinct products, saved into the run. With a `scratch` folder the refresh is
    streamed through files there, and the index returned is the saved one, memory-mapped
    from the run."""
    parent = load_index(parent_index_dir)
    index = refresh_index(
        parent,
        vectors.ids,
        vectors.vectors,
        search,
        vectors.prints,
        None if scratch is None else Path(scratch),
    )
    index = index.with_products(products)
    root = RunLayout(Path(run_dir)).index.root
    save(index, root)
    get_run_logger().info("refreshed index: %d photos on the trained k=%d", index.n, index.k)
    return index if scratch is None else load_index(root, index.fingerprint)


@task(name="drift", cache_policy=NO_CACHE)
def drift_task(
    *,
    index: SearchIndex,
    vectors: CatalogVectors,
    parent: RunManifest,
    parent_index_dir: str,
    added: int,
    evaluation: EvaluationConfig,
    target_recall: float,
    limits: RefreshConfig,
) -> Drift:
    """How far the refreshed index has drifted from the run whose clusters were trained:
    photos added since, cluster size spread then and now, recall@10 re-checked at the run's
    probes."""
    if parent.refresh is None:
        added_before, trained_spread = 0, size_spread(load_index(parent_index_dir))
    else:
        before = parent.refresh.drift
        added_before, trained_spread = before.added_since_training, before.trained_size_spread
    recall = recheck_recall(
        index,
        vectors.ids,
        vectors.vectors,
        parent.calibration.probes,
        evaluation,
        limits.recheck_sample,
    )
    drift = measure_drift(
        added_before + added,
        index.n,
        size_spread(index),
        trained_spread,
        recall,
        target_recall,
        limits,
    )
    for reason in drift.reasons:
        get_run_logger().warning("retrain due: %s", reason)
    return drift


def refresh_markdown(
    *, run_id: str | None, parent_run: str, changes: CatalogChanges, drift: Drift | None
) -> str:
    """What a refresh did, as the Markdown of its artifact."""
    counts = changes.counts()
    if run_id is None:
        head = f"Catalog unchanged since run `{parent_run}`: nothing published."
    else:
        head = f"Run `{run_id}` published from run `{parent_run}` (clusters kept) as **LATEST**."
    lines = [
        head,
        "",
        "| change | photos |",
        "|---|---|",
        *(f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()),
    ]
    if drift is not None:
        lines += [
            "",
            f"Drift since training: {drift.added_share:.1%} of the photos added, cluster size "
            f"spread {drift.size_spread:.2f} (at training {drift.trained_size_spread:.2f}), "
            f"recall@10 re-checked {drift.recall_at_10:.3f} (target {drift.target_recall}).",
        ]
        if drift.retrain_due:
            lines += ["", "**Retrain due**: the next nightly run retrains from scratch.", ""]
            lines += [f"- {reason}" for reason in drift.reasons]
    return "\n".join(lines)


def publish_refresh_artifact(markdown: str) -> None:
    """The refresh's decision in the Prefect UI."""
    create_markdown_artifact(
        key="refresh", markdown=markdown, description="Catalog refresh without retraining"
    )
