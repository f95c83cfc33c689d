"""The `nightly` flow: retrain on what changed, warm-started, promoted only past quality gates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from vasrch import runs
from vasrch.backbones import BackboneSpec, fingerprint
from vasrch.config import Config, GatesConfig, load_config
from vasrch.flows.train import train_stage
from vasrch.runner import use_runner

Gate = Callable[[dict[str, Any]], str | None]


def quality_gate(gates: GatesConfig) -> Gate:
    """A gate for `train_stage`: None when the run's manifest passes `gates`, else the reason,
    naming each failing figure and its threshold."""

    def gate(manifest: dict[str, Any]) -> str | None:
        failures = []
        recall = manifest["metrics"]["recall_at_10"]
        if recall < gates.min_recall_at_10:
            failures.append(
                f"recall_at_10 {recall:.4f} is below nightly.gates.min_recall_at_10 "
                f"{gates.min_recall_at_10}"
            )
        counts = manifest["counts"]
        fraction = counts["rejected"] / counts["catalog"] if counts["catalog"] else 0.0
        if fraction > gates.max_rejected_fraction:
            failures.append(
                f"rejected fraction {fraction:.4f} ({counts['rejected']} of {counts['catalog']} "
                f"images) is above nightly.gates.max_rejected_fraction "
                f"{gates.max_rejected_fraction}"
            )
        return "; ".join(failures) or None

    return gate


def previous_centroids(cfg: Config) -> tuple[str | None, np.ndarray | None]:
    """(LATEST run id, its centroids) when they can warm-start this config's KMeans: same
    backbone, same PCA setting, and the same k unless k is `auto` (the suggestion is only known
    during training; centroids of another k are then ignored by KMeans with a warning)."""
    latest = runs.latest_run_id(cfg.workspace)
    if latest is None:
        return None, None
    folder = runs.runs_dir(cfg.workspace) / latest
    manifest = runs.read_manifest(folder, verify=False)
    k = cfg.clustering.num_clusters
    same_space = (
        manifest.get("fingerprint") == fingerprint(BackboneSpec.from_config(cfg.features))
        and manifest["config"]["clustering"]["n_components"] == cfg.clustering.n_components
    )
    if not same_space or (k != "auto" and k != manifest.get("k")):
        return latest, None
    return latest, np.load(folder / "index" / "centroids.npy", allow_pickle=False)


def _decision_markdown(result: dict[str, Any], previous: str | None) -> str:
    verdict = (
        "promoted to **LATEST**"
        if result["promoted"]
        else f"**not promoted**: {result['reason']}; LATEST stays `{previous}`"
    )
    counts, extract = result["counts"], result["extract"]
    return "\n".join(
        [
            f"Run `{result['run_id']}` {verdict}.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| recall@10 | {result['metrics']['recall_at_10']:.4f} |",
            f"| images: new / changed / unchanged / gone | {counts['new']} / {counts['changed']} / "
            f"{counts['unchanged']} / {counts['gone']} |",
            f"| extracted / reused / rejected | {extract['new']} / {extract['reused']} / "
            f"{extract['rejected']} |",
            f"| k (warm start) | {result['k']} ({'yes' if result['warm_start'] else 'no'}) |",
            f"| runs pruned | {len(result['pruned'])} |",
        ]
    )


@flow(name="nightly")
def nightly_flow(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retrain on the current catalog (extracting only new and changed images), warm-started
    from LATEST's centroids when k is unchanged; promote the run to LATEST only if it passes
    nightly.gates, else keep LATEST and record the run as rejected; then prune old runs.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        overrides: Config fields to change for this run, as dotted keys, e.g.
            {"nightly.gates.min_recall_at_10": 0.8}.
    """
    cfg = load_config(config_path, overrides)
    logger = get_run_logger()
    previous, init = previous_centroids(cfg)
    with use_runner(cfg.runner):
        result = train_stage(cfg, init_centroids=init, gate=quality_gate(cfg.nightly.gates))
    centroids = Path(result["run_dir"]) / "index" / "centroids.npy"
    new_shape = np.load(centroids, mmap_mode="r", allow_pickle=False).shape
    result["warm_start"] = init is not None and init.shape == new_shape
    result["previous_run"] = previous
    result["pruned"] = runs.prune_runs(cfg.workspace, cfg.runs.keep_last)
    if result["promoted"]:
        logger.info("run %s promoted to LATEST", result["run_id"])
    else:
        logger.warning(
            "run %s not promoted (%s); LATEST stays %s",
            result["run_id"],
            result["reason"],
            previous,
        )
    create_markdown_artifact(
        key="nightly-decision",
        markdown=_decision_markdown(result, previous),
        description="Nightly retrain: quality gates and promotion",
    )
    return result
