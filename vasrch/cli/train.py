"""`vasrch train` (alias `run`): extract, cluster, index, evaluate and bulk in one run."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vasrch.cli.options import (
    Subparsers,
    add_config,
    add_no_progress,
    add_overrides,
    config_path,
    load,
    overrides,
)
from vasrch.cli.output import print_line, print_table
from vasrch.cli.progress_bar import progress_bar
from vasrch.index.figures import FIGURE_LABELS, QUERY_KINDS, figure_value

if TYPE_CHECKING:
    from vasrch.orchestration.flows.train import TrainResult

QUALITY_TITLE = (
    "quality (leave-one-out: catalog photos, each leaving itself out; held-out: photos not in "
    "the catalog; recall against exact search)"
)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "train",
        aliases=["run"],
        help="run the train flow: extract, cluster, index, evaluate, bulk (alias: run)",
    )
    add_config(p, required=True)
    add_overrides(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def _figure(name: str, value: float) -> str:
    shown = figure_value(name, value)
    return str(shown) if isinstance(shown, int) else f"{shown:.4f}"


def quality_summary(
    metrics: Mapping[str, float], calibrated_on: str
) -> tuple[list[dict[str, str]], str]:
    """A run's figures as table rows (one per figure, one column per kind of query) and the
    line saying how many probes were calibrated, on what, with what recall."""
    kinds = [k for k in QUERY_KINDS if any(m.startswith(f"{k}_") for m in metrics)]
    names: dict[str, None] = {}
    for key in metrics:
        for kind in kinds:
            if key.startswith(f"{kind}_"):
                names[key.removeprefix(f"{kind}_")] = None
    rows = [
        {
            "figure": FIGURE_LABELS.get(name, name),
            **{
                QUERY_KINDS[kind]: _figure(name, metrics[f"{kind}_{name}"])
                if f"{kind}_{name}" in metrics
                else "-"
                for kind in kinds
            },
        }
        for name in names
    ]
    probes = _figure("probes", metrics["probes"])
    recall = metrics.get("recall_at_10")
    line = f"probes {probes}, calibrated on {calibrated_on}"
    if recall is not None:
        line += f" (recall@10 {recall:.4f})"
    return rows, line


def run(args: argparse.Namespace) -> int:
    """Run the train flow, then print its counts, the run folder, k, the quality figures, the
    probes, the bulk summary, why the run was not promoted (if so) and its report; returns 0."""
    load(args)
    from vasrch.orchestration.flows.train import train_flow

    with progress_bar(not args.no_progress):
        result = train_flow(config_path(args), overrides(args.set))
    print_summary(result)
    return 0


def print_summary(result: TrainResult) -> None:
    """The train flow's result as the lines and table `vasrch train` prints."""
    from vasrch.layout import RunLayout
    from vasrch.workspace.rejections import first_rejections

    extract, manifest = result.extract, result.manifest
    run = RunLayout(Path(result.run_dir))
    if result.backbone_note:
        print_line(f"note: {result.backbone_note}")
    print_line(
        f"photos: {extract.seen} seen = {extract.new} extracted + {extract.reused} reused from "
        f"the cache + {extract.rejected} rejected; {manifest.counts.indexed} indexed "
        f"({round(extract.images_per_s, 2)} images/s)"
    )
    for line in first_rejections(extract.rejections, run.rejections):
        print_line(f"rejected: {line}")
    print_line(f"run: {result.run_dir}")
    print_line(f"suggested k: {manifest.suggested_k}  chosen k: {manifest.k}")
    if manifest.k_reason:
        print_line(f"k: {manifest.k_reason}")
    if manifest.sweep_note:
        print_line(f"note: {manifest.sweep_note}")
    rows, calibration = quality_summary(
        manifest.evaluation.figures(), manifest.calibration.calibrated_on
    )
    print_table(rows, QUALITY_TITLE)
    print_line(calibration)
    if manifest.bulk:
        b = manifest.bulk
        print_line(
            f"bulk: {b.neighbour_rows} neighbour rows, {b.duplicate_groups} near-duplicate "
            f"groups ({b.duplicate_images} images)"
        )
    if not manifest.promoted:
        print_line(f"not promoted to LATEST: {manifest.reason}")
    print_line(f"report: {run.report}")
