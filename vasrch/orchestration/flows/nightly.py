"""The `nightly` flow: retrain on what changed, warm-started, promoted only past quality gates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.states import Failed, State

from vasrch.config import load_config
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.layout import RunLayout
from vasrch.orchestration.flows.train import TrainResult, train_stage
from vasrch.orchestration.naming import run_name
from vasrch.orchestration.task_runners import use_runner
from vasrch.pages.file_server import link_to
from vasrch.workspace.mirror import workspace_writer
from vasrch.workspace.promotion import warm_start
from vasrch.workspace.rejections import SHOWN, first_rejections, rejection_line


@dataclass(frozen=True)
class NightlyResult:
    """A nightly run: the run trained (promoted, or recorded as rejected), whether KMeans
    started from LATEST's centroids, and the runs pruned afterwards."""

    train: TrainResult
    warm_start: bool
    pruned: tuple[str, ...]


def _decision_markdown(result: NightlyResult, previous: str | None) -> str:
    manifest = result.train.manifest
    verdict = (
        "promoted to **LATEST**"
        if manifest.promoted
        else f"**not promoted**: {manifest.reason}; LATEST stays `{previous}`"
    )
    counts, extract = manifest.counts, result.train.extract
    return "\n".join(
        [
            f"Run `{manifest.run_id}` {verdict}.",
            "",
            "| figure | value |",
            "|---|---|",
            *(
                f"| {name} | {value:.4f} |"
                for name, value in manifest.evaluation.figures().items()
                if name.endswith(("recall_at_10", "precision_at_10"))
            ),
            f"| images: new / changed / unchanged / gone | {counts.new} / {counts.changed} / "
            f"{counts.unchanged} / {counts.gone} |",
            f"| extracted / reused / rejected | {extract.new} / {extract.reused} / "
            f"{extract.rejected} |",
            f"| k (warm start) | {manifest.k} ({'yes' if result.warm_start else 'no'}) |",
            f"| runs pruned | {len(result.pruned)} |",
            *_rejections_markdown(result.train),
        ]
    )


def _rejections_markdown(trained: TrainResult) -> list[str]:
    """The first rejected photos as a list, and a link to the run's file of all of them."""
    table = trained.extract.rejections
    if table.empty:
        return []
    where = RunLayout(trained.run_dir).rejections
    shown = table.head(SHOWN).to_dict("records")
    return [
        "",
        f"Rejected photos ({len(table)}, all in [{where.name}]({link_to(where)})):",
        "",
        *(f"- {rejection_line(row)}" for row in shown),
        *([f"- ... and {len(table) - len(shown)} more"] if len(table) > len(shown) else []),
    ]


@flow(name="nightly", flow_run_name=run_name("nightly"))
def nightly_flow(
    config_path: str, overrides: dict[str, Any] | None = None
) -> NightlyResult | State:
    """Retrain on the current catalog (extracting only new and changed images), warm-started
    from LATEST's centroids when k is unchanged; promote the run to LATEST only if it passes
    nightly.gates, else keep LATEST, record the run as rejected and end Failed with the gate's
    reason (so automations and notifications fire; the result is the state's data); then prune
    old runs.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        overrides: Config fields to change for this run, as dotted keys, e.g.
            {"nightly.gates.min_recall_at_10": 0.8}.
    """
    cfg = load_config(config_path, overrides)
    logger = get_run_logger()
    fp = fingerprint(BackboneSpec.from_config(cfg.features))
    with workspace_writer(cfg, "nightly flow", prune=True) as pruned:
        start = warm_start(cfg.workspace, fp, cfg.clustering, cfg.search.centre)
        if start.problem:
            logger.warning("cold start: %s", start.problem)
        with use_runner(cfg.runner):
            trained = train_stage(cfg, init_centroids=start.centroids, gates=cfg.nightly.gates)
    result = NightlyResult(
        train=trained, warm_start=start.applied(trained.manifest.k), pruned=tuple(pruned)
    )
    manifest = trained.manifest
    for line in first_rejections(trained.extract.rejections, RunLayout(trained.run_dir).rejections):
        logger.warning("rejected: %s", line)
    if manifest.promoted:
        logger.info("run %s promoted to LATEST", manifest.run_id)
    else:
        logger.warning(
            "run %s not promoted (%s); LATEST stays %s",
            manifest.run_id,
            manifest.reason,
            start.previous_run,
        )
    create_markdown_artifact(
        key="nightly-decision",
        markdown=_decision_markdown(result, start.previous_run),
        description="Nightly retrain: quality gates and promotion",
    )
    if not manifest.promoted:
        return Failed(message=f"not promoted: {manifest.reason}", data=result)
    return result
