"""`vasrch bulk`: neighbours and near-duplicate groups for a whole catalog."""

from __future__ import annotations

import argparse

from vasrch.cli.options import (
    Subparsers,
    add_config,
    add_no_progress,
    add_overrides,
    config_path,
    count,
    load,
)
from vasrch.cli.output import print_line
from vasrch.cli.progress_bar import progress_bar


def register(sub: Subparsers) -> None:
    p = sub.add_parser("bulk", help="neighbours and near-duplicate groups for a whole catalog")
    add_config(p, required=True)
    add_overrides(p)
    p.add_argument("--run", help="run id (default: LATEST)")
    p.add_argument("--top-n", type=count(1), help="neighbours per image (default: bulk.top_n)")
    p.add_argument("--probes", type=count(1), help="clusters searched (default: bulk.probes)")
    p.add_argument("--csv", action="store_true", help="also write neighbours.csv")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the bulk flow with a run (LATEST by default) and print what it wrote and where;
    returns 0."""
    load(args)
    from vasrch.orchestration.flows.bulk import bulk_flow

    with progress_bar(not args.no_progress):
        result = bulk_flow(config_path(args), args.run, args.top_n, args.probes, args.csv)
    print_line(
        f"bulk for run {result.run_id}: {result.summary.neighbour_rows} neighbour rows, "
        f"{result.summary.duplicate_groups} near-duplicate groups"
    )
    print_line(f"written to {result.out_dir}")
    return 0
