"""`vasrch products hide|unhide|hidden`: take products out of every answer at once, faster
than a refresh, and put them back."""

from __future__ import annotations

import argparse
import getpass

from vasrch.cli.options import Subparsers, add_workspace, workspace_and_search, workspace_store
from vasrch.cli.output import print_line, print_table
from vasrch.errors import UsageError


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "products", help="hide products from every answer at once, unhide them, list them"
    )
    p.add_argument("action", choices=["hide", "unhide", "hidden"], help="what to do")
    p.add_argument(
        "targets",
        nargs="*",
        metavar="CONFIG|PRODUCT_ID",
        help="the config (an argument ending in .yaml or .yml) and the product ids",
    )
    add_workspace(p, among="targets")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Hide or unhide the named products in the workspace (every searcher of its runs leaves
    hidden products out of its next answer), or list the hidden ones; returns 0. On a workspace
    in object storage the store's record changes (by compare-and-swap)."""
    from vasrch.workspace.hidden import hide, read_hidden, unhide

    store = workspace_store(args)
    if store is not None and args.action != "hidden":
        workspace = args.local_workspace  # the store's record changes: no run is needed
    else:
        workspace = workspace_and_search(args)[0]
    if args.action == "hidden":
        entries = read_hidden(workspace).entries
        rows = [{"product_id": p, **entry} for p, entry in sorted(entries.items())]
        if rows:
            print_table(rows, f"hidden products in {workspace}")
        else:
            print_line(f"no hidden products in {workspace}")
        return 0
    if not args.targets:
        raise UsageError(f"products {args.action} needs the product ids")
    if args.action == "hide":
        by = f"vasrch products hide ({getpass.getuser()})"
        changed = hide(workspace, args.targets, by=by, store=store)
        print_line(f"hidden: {len(changed)} ({len(args.targets) - len(changed)} already hidden)")
    else:
        changed = unhide(workspace, args.targets, store)
        print_line(f"shown again: {len(changed)} ({len(args.targets) - len(changed)} not hidden)")
    return 0
