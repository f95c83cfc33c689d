"""`vasrch query-server`: ranked queries over HTTP with a warm model."""

from __future__ import annotations

import argparse
import os

from vasrch.cli.options import (
    Subparsers,
    add_workspace,
    count,
    port,
    workspace_and_search,
    workspace_store,
)
from vasrch.errors import UsageError


def register(sub: Subparsers) -> None:
    p = sub.add_parser("query-server", help="serve ranked queries over HTTP with a warm model")
    add_workspace(p)
    p.add_argument(
        "--run",
        help="serve this run only (an id or a run folder) instead of following runs/LATEST",
    )
    p.add_argument(
        "--show-paths",
        action="store_true",
        help="answers carry each photo's file path on this machine (off: ids only)",
    )
    p.add_argument(
        "--model-threads",
        type=count(0),
        default=1,
        help="TensorFlow threads for one image's inference (default 1: concurrent requests "
        "share the cores, the fastest under load; 0: TensorFlow's default, every core)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (default 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=port,
        default=8765,
        help="TCP port; 0 picks a free one (default 8765)",
    )
    p.add_argument(
        "--top-n",
        type=count(1),
        help="answers per query unless the request says ?top_n= (default: the config's "
        "search.top_n, 10)",
    )
    p.add_argument(
        "--probes",
        type=count(1),
        help="nearest clusters searched unless the request says ?probes= (default: the "
        "config's search.probes; auto: the run's calibrated probes)",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=count(1),
        default=10_000_000,
        help="largest accepted upload; larger ones get 413 before their body is read",
    )
    p.add_argument(
        "--max-query-pixels",
        type=int,
        default=40_000_000,
        help="largest image accepted, in pixels, read from its header before decoding; larger "
        "ones get 413 (default 40,000,000)",
    )
    p.add_argument(
        "--max-decodes",
        type=int,
        default=2,
        help="uploads decoded at once; others wait (default 2)",
    )
    p.add_argument(
        "--decode-wait",
        type=float,
        default=10.0,
        help="seconds an upload waits for a decode slot before it gets 503 with Retry-After "
        "(default 10)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks of runs/LATEST; a new run is loaded and "
        "verified before it replaces the served one (default 1.0)",
    )
    p.add_argument(
        "--token",
        help="every path but /health needs 'Authorization: Bearer TOKEN' (default: the "
        "VASRCH_TOKEN environment variable, which other users cannot see in `ps`)",
    )
    p.add_argument(
        "--allow-public",
        action="store_true",
        help="allow a non-loopback --host without a token (e.g. behind an authenticating proxy)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN (e.g. https://shop.example) call the service from a "
        "browser; repeatable (default: none)",
    )
    p.add_argument("--quiet", action="store_true", help="no access log line per request")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own model and index (default 1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve queries over HTTP until interrupted; returns 0."""
    from vasrch.service.runner import run_query_server
    from vasrch.service.settings import TOKEN_ENV, ServiceSettings

    workspace, search, _ = workspace_and_search(args)
    store = workspace_store(args)
    settings = ServiceSettings(
        workspace=workspace,
        run=args.run,
        workspace_url=None if store is None else store.url,
        workspace_storage_options={} if store is None else dict(store.storage_options),
        host=args.host,
        port=args.port,
        top_n=args.top_n,
        probes=args.probes,
        search=search,
        max_upload_bytes=args.max_upload_bytes,
        max_query_pixels=args.max_query_pixels,
        decode_slots=args.max_decodes,
        decode_wait_s=args.decode_wait,
        show_paths=args.show_paths,
        model_threads=args.model_threads,
        reload_interval_s=args.reload_interval,
        token=args.token or os.environ.get(TOKEN_ENV),
        cors_origins=tuple(args.cors_origin),
        access_log=not args.quiet,
        workers=args.workers,
        allow_public=args.allow_public,
    )
    try:
        settings.check()
    except ValueError as err:  # check()'s refusal names the option to change
        raise UsageError(str(err)) from None
    run_query_server(settings)
    return 0
