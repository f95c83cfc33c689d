"""`vasrch extract`: the catalog's feature shards, without training."""

from __future__ import annotations

import argparse
import sys

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
    p = sub.add_parser("extract", help="extract feature shards for the configured catalog")
    add_config(p, required=True)
    add_overrides(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the extract flow, then print its summary, this catalog's rejected images (each with
    its reason and whether the next run tries it again), the folders the scan left out (on
    stderr) and the feature cache folder; returns 0."""
    cfg = load(args)
    from vasrch.features.extraction import cache_dir_for
    from vasrch.orchestration.flows.extract import extract_flow

    with progress_bar(not args.no_progress):
        summary = extract_flow(config_path(args), overrides(args.set))
    print_table([{"": k, "value": v} for k, v in summary.as_dict().items()], "extraction")
    if len(summary.rejections):
        rows = [
            {
                "image_id": r.image_id,
                "reason": r.reason,
                "next run": "retried" if r.retry else "kept rejected",
            }
            for r in summary.rejections.itertuples(index=False)
        ]
        print_table(rows, "rejected images")
    for warning in summary.warnings:
        print(f"vasrch: warning: {warning}", file=sys.stderr)
    print_line(f"features: {cache_dir_for(cfg.workspace, summary.fingerprint)}")
    return 0
