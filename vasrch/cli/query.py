"""`vasrch query`: the catalog products most similar to query images."""

from __future__ import annotations

import argparse
import sys

from vasrch.cli.options import Subparsers, add_format, add_workspace, count, workspace_and_search
from vasrch.cli.output import print_line, print_table
from vasrch.errors import UsageError


def register(sub: Subparsers) -> None:
    p = sub.add_parser("query", help="rank the catalog products most similar to query images")
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="query image files or folders (searched recursively); an argument ending in "
        ".yaml or .yml is the config",
    )
    add_workspace(p, among="images")
    p.add_argument("--run", help="run id (default: LATEST)")
    p.add_argument(
        "--top-n",
        type=count(1),
        help="neighbours per query (default: the config's search.top_n, 10)",
    )
    p.add_argument(
        "--probes",
        type=count(1),
        help="clusters searched (default: the config's search.probes; auto: the run's "
        "calibrated probes)",
    )
    add_format(p)
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="COLUMN=VALUE[,VALUE...]",
        help="only products whose metadata column has one of the values (repeatable: every "
        "filter must match), e.g. --filter category=shoes",
    )
    p.add_argument("--show-paths", action="store_true", help="add each matched photo's file path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Rank the neighbours of the query images with a run (by the workspace's warm query service
    when one runs, else in this process) and print them as a table, CSV or JSON; returns 0, 1
    when some images could not be read, 2 when none."""
    import json
    import logging

    if not args.images:
        raise UsageError("give one or more query images or folders")
    from vasrch.catalog.products import parse_filters
    from vasrch.pages.spreadsheets import to_csv_text
    from vasrch.query_jobs.job import query_files
    from vasrch.query_jobs.routing import QuerySetup, answer_queries

    setup = QuerySetup(*workspace_and_search(args))
    filters = parse_filters(args.filter)
    files = query_files(args.images)
    log = logging.getLogger("vasrch.query")
    answered = answer_queries(setup, files, args.run, args.top_n, args.probes, log, filters)
    answers, params = answered.answers, answered.params
    for rejected in answers.rejected:
        print(f"vasrch: skipped {rejected['query']}: {rejected['reason']}", file=sys.stderr)
    if not answers.answered:
        return 2
    table = answers.table if args.show_paths else answers.table.drop(columns="path")
    if args.format == "json":
        print(json.dumps(table.to_dict("records"), indent=2))
    elif args.format == "csv":
        print(to_csv_text(table, raw=args.raw_csv), end="")
    else:
        print_line(
            f"run {answered.run_id} · top {params.top_n} · {params.probes} probes · "
            f"answered by {answered.embedder}"
        )
        print_table(table.to_dict("records"), group_by="query")
    return 0 if not answers.rejected else 1
