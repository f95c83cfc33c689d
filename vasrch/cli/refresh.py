"""`vasrch refresh`: bring the served run up to date with the catalog, without retraining."""

from __future__ import annotations

import argparse

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


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "refresh",
        help="apply added, removed and changed products to the served run without retraining",
    )
    add_config(p, required=True)
    add_overrides(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the refresh flow, then print what changed and the run it published (or that the
    catalog was unchanged), and whether a retrain is due; returns 0."""
    load(args)
    from vasrch.orchestration.flows.refresh import refresh_flow

    with progress_bar(not args.no_progress):
        result = refresh_flow(config_path(args), overrides(args.set))
    counts = result.changes.counts()
    rows = [{"change": k.replace("_", " "), "photos": v} for k, v in counts.items()]
    print_table(rows, f"changes since run {result.parent_run}")
    if result.manifest is None:
        print_line(f"catalog unchanged: run {result.parent_run} stays LATEST")
        return 0
    drift = result.manifest.refresh.drift
    trained = result.manifest.refresh.trained_run
    print_line(f"run: {result.run_dir} (LATEST; the clusters of run {trained})")
    print_line(
        f"drift since training: {drift.added_share:.1%} added, cluster size spread "
        f"{drift.size_spread:.2f} (trained {drift.trained_size_spread:.2f}), recall@10 "
        f"re-checked {drift.recall_at_10:.3f}"
    )
    for reason in drift.reasons:
        print_line(f"retrain due: {reason}")
    print_line(f"took {result.seconds:.1f} s")
    return 0
