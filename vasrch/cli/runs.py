"""`vasrch runs`: list, show, promote or prune a workspace's versioned runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vasrch.cli.options import Subparsers, add_workspace, count, workspace_and_search
from vasrch.cli.output import print_line, print_table
from vasrch.errors import UsageError
from vasrch.layout import RunLayout

if TYPE_CHECKING:
    from vasrch.workspace.run_manifest import RunManifest

SHOWN_REJECTIONS = 20  # rows of the rejections table `runs show` prints


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
    if args.action in ("promote", "prune") and args.local_workspace is not None:
        raise UsageError(
            f"runs {args.action} works on a workspace folder; a workspace in object storage "
            "moves LATEST only by publishing a run (train, nightly, refresh)"
        )
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
        _print_rejections(RunLayout(folder), manifest)
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


def _print_rejections(run: RunLayout, manifest: RunManifest) -> None:
    """The run's first rejected photos as a table, and where all of them are."""
    import pandas as pd

    from vasrch.workspace.rejections import run_rejections

    table = run_rejections(run, manifest)
    if table.empty:
        print_line("rejected photos: none")
        return
    rows = [
        {
            "image_id": r["image_id"],
            "row": "" if pd.isna(r["row"]) else str(r["row"]),
            "reason": r["reason"],
            "next run": "retried" if r["retry"] else "kept rejected",
        }
        for r in table.head(SHOWN_REJECTIONS).to_dict("records")
    ]
    print_table(rows, f"rejected photos ({len(table)})")
    more = f"the first {SHOWN_REJECTIONS} shown; " if len(table) > SHOWN_REJECTIONS else ""
    print_line(f"{more}all rejected photos: {run.rejections}")
