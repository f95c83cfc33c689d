"""`vasrch duplicates`: the near-duplicate groups of a saved run."""

from __future__ import annotations

import argparse

from vasrch.cli.options import (
    Subparsers,
    add_config,
    add_format,
    add_overrides,
    load,
    score_threshold,
)
from vasrch.cli.output import print_line, print_table


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "duplicates", help="near-duplicate groups of a saved run, from its bulk neighbours"
    )
    add_config(p, required=True)
    add_overrides(p)
    p.add_argument("--run", help="run id (default: LATEST)")
    p.add_argument(
        "--threshold",
        type=score_threshold,
        help="duplicate score at or above which two images are near-duplicates "
        "(default: the config's bulk.duplicate_threshold)",
    )
    add_format(p)
    p.add_argument("--show-paths", action="store_true", help="add each photo's file path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The near-duplicate groups of a saved run (LATEST by default) from its newest bulk
    neighbours, at --threshold (else bulk.duplicate_threshold), as a table, CSV or JSON;
    nothing is re-run. Returns 0."""
    import json

    from vasrch.duplicates.groups import run_groups
    from vasrch.pages.spreadsheets import to_csv_text
    from vasrch.workspace.runs import resolve_run

    cfg = load(args)
    threshold = cfg.bulk.duplicate_threshold if args.threshold is None else args.threshold
    folder = resolve_run(cfg.workspace, args.run)
    table, source = run_groups(cfg.workspace, folder, threshold)
    if not args.show_paths:
        table = table.drop(columns="path")
    if args.format == "json":
        print(json.dumps(table.to_dict("records"), indent=2))
    elif args.format == "csv":
        print(to_csv_text(table, raw=args.raw_csv), end="")
    elif table.empty:
        print_line(f"no near-duplicate groups at duplicate score >= {threshold} in {source.root}")
    else:
        title = (
            f"run {folder.name} · {table['group_id'].nunique()} groups at duplicate score >= "
            f"{threshold} · neighbours from {source.root}"
        )
        # Groups numbered from 1 where a person reads them; json and csv keep the stored id.
        shown = table.rename(columns={"group_id": "group"}).assign(group=table["group_id"] + 1)
        print_table(shown.to_dict("records"), title)
    return 0
