"""`vasrch runs`: list, show, promote or prune a workspace's versioned runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vasrch.cli.options import (
    Subparsers,
    add_workspace,
    count,
    workspace_and_search,
    workspace_store,
)
from vasrch.cli.output import print_line, print_table
from vasrch.errors import UsageError
from vasrch.layout import RunLayout

if TYPE_CHECKING:
    from vasrch.config import RunsConfig
    from vasrch.workspace.run_manifest import RunManifest
    from vasrch.workspace.store import WorkspaceStore

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
    (after verifying it), or prune to --keep (else the config's runs.keep_last; on a workspace
    in object storage, the store's runs, holding its lease); returns 0."""
    from vasrch.workspace import runs
    from vasrch.workspace.lock import workspace_lock

    if len(args.targets) > 1:
        raise UsageError(f"give one run id, got {', '.join(args.targets)}")
    run_id = args.targets[0] if args.targets else None
    store = workspace_store(args)
    if args.action == "prune" and store is not None:
        _prune_store(store, _keep(args), _runs_config(args))
        return 0
    workspace = workspace_and_search(args)[0]
    if args.action == "promote" and args.local_workspace is not None:
        raise UsageError(
            "runs promote works on a workspace folder; a workspace in object storage moves "
            "LATEST only by publishing a run (train, nightly, refresh)"
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
        with workspace_lock(workspace, "vasrch runs prune"):
            removed = runs.prune_runs(workspace, _keep(args))
        print_line(f"removed {len(removed)}: {', '.join(removed) or '-'}")
    return 0


def _runs_config(args: argparse.Namespace) -> RunsConfig:
    """The config's `runs` section, its defaults without a config."""
    from vasrch.config import RunsConfig, load_config

    return load_config(args.config).runs if args.config else RunsConfig()


def _keep(args: argparse.Namespace) -> int:
    """How many runs prune keeps: --keep, else the config's runs.keep_last."""
    if args.keep is not None:
        return int(args.keep)
    if not args.config:
        raise UsageError("runs prune needs --keep N or a config")
    return _runs_config(args).keep_last


def _prune_store(store: WorkspaceStore, keep: int, cfg: RunsConfig) -> None:
    """Prune the store's runs to `keep` holding the workspace's lease (no run is being
    published meanwhile)."""
    from vasrch.workspace.lease import workspace_lease
    from vasrch.workspace.remote_prune import prune_store_runs

    with workspace_lease(store, "vasrch runs prune", cfg.lock_timeout_s, cfg.lease_ttl_s):
        removed = prune_store_runs(store, keep)
    print_line(f"removed {len(removed)} from {store.url}: {', '.join(removed) or '-'}")


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
