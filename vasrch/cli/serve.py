"""`vasrch serve`: the Prefect deployments, served from this process."""

from __future__ import annotations

import argparse

from vasrch.cli.options import Subparsers, add_config, config_path, count, load, port, seconds
from vasrch.orchestration.deployments import DEFAULT_POLL_S


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the train, nightly, bulk and query deployments to the Prefect server at "
        "PREFECT_API_URL (runs started from the UI execute in this process)",
    )
    add_config(p, required=True)
    p.add_argument("--limit", type=count(1), help="most flow runs at once (default: no cap)")
    p.add_argument(
        "--files-host",
        default="127.0.0.1",
        help="address of the read-only workspace file server the UI's links open",
    )
    p.add_argument(
        "--files-port",
        type=port,
        default=8766,
        help="its port (default 8766; 0: any free one)",
    )
    p.add_argument(
        "--poll-interval",
        type=seconds,
        default=DEFAULT_POLL_S,
        metavar="SECONDS",
        help=f"how often to ask the Prefect server for runs to start (default {DEFAULT_POLL_S:g})",
    )
    p.add_argument(
        "--with-query-service",
        action="store_true",
        help="also keep the workspace's query service warm on 127.0.0.1 (once it has a run): "
        "query runs then send it their images instead of loading the model",
    )
    p.add_argument(
        "--query-port",
        type=port,
        default=8765,
        help="port of that service (default 8765; 0: any free one)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the config, then serve the Prefect deployments until stopped; returns 0."""
    load(args)
    from vasrch.orchestration.deployments import serve_deployments

    serve_deployments(
        config_path(args),
        limit=args.limit,
        files_host=args.files_host,
        files_port=args.files_port,
        poll_s=args.poll_interval,
        query_port=args.query_port if args.with_query_service else None,
    )
    return 0
