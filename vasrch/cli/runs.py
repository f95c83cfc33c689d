"""`vasrch runs`: list, show, promote or prune a workspace's versioned runs."""

from __future__ import annotations

import argparse

from vasrch.cli.options import Subparsers, add_workspace, count, workspace_and_search
from vasrch.cli.output import print_line, print_table
from vasrch.errors import UsageError


def register(sub: Subparsers) -> None:
    p = sub.add_parser("runs", help="list, show, promote or prune versioned runs")
    p.add_argument("action", choices=["list", "show", "promote", "prune"], help="what to do")
    p.add_argument(
        "targets",
        nargs="*",
        metavar="CONFIG|RUN",
        help="the config (an argument ending in .yaml or .yml) and the run id for show "
        "(default: LATEST) and promote (required)",
    )
    add_workspace(p, among="targets")
    p.add_argument(
        "--keep",
        type=count(0),
        help="prune: complete runs to keep besides LATEST (default runs.keep_last)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List the runs, show one's manifest after verifying its artifacts, promote one to LATEST
    (after verifying it), or prune to --keep (else the config's runs.keep_last); returns 0."""
    from vasrch.workspace import runs
    from vasrch.workspace.lock import workspace_lock

    if len(args.targets) > 1:
        raise UsageError(f"give one run id, got {', '.join(args.targets)}")
    run_id = args.targets[0] if args.targets else None
    workspace = workspace_and_search(args)[0]
    if args.action == "list":
        rows = runs.list_runs(workspace)
        if rows:
            print_table(rows, f"runs in {runs.runs_dir(workspace)}")
        else:
            print_line(f"no runs in {runs.runs_dir(workspace)}")
    elif args.action == "show":
        folder = runs.resolve_run(workspace, run_id)
        manifest = runs.read_manifest(folder, verify=True)
        print(manifest.model_dump_json(indent=2, exclude={"artifacts", "config"}))
        print_line(f"artifacts verified: {folder}")
    elif args.action == "promote":
        if not run_id:
            raise UsageError("runs promote needs the id of the run to promote")
        before = runs.latest_run_id(workspace)
        with workspace_lock(workspace, "vasrch runs promote"):
            runs.promote(workspace, run_id)
        print_line(f"LATEST: {run_id} (was {before or '-'})")
    else:
        from vasrch.config import load_config

        keep = args.keep
        if keep is None and args.config:
            keep = load_config(args.config).runs.keep_last
        if keep is None:
            raise UsageError("runs prune needs --keep N or a config")
        with workspace_lock(workspace, "vasrch runs prune"):
            removed = runs.prune_runs(workspace, keep)
        print_line(f"removed {len(removed)}: {', '.join(removed) or '-'}")
    return 0
