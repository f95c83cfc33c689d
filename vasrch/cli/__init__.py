"""The `vasrch` command: one module per command, each adding its own subcommand to the parser
built here; `main` runs one and turns errors into exit statuses. Importing it loads neither
Prefect nor TensorFlow."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from vasrch import __version__
from vasrch.cli import (
    bulk,
    duplicates,
    extract,
    products,
    query,
    query_server,
    refresh,
    runs,
    serve,
    train,
)
from vasrch.cli.options import settle_config
from vasrch.errors import VasrchError
from vasrch.quiet import QUIET_NATIVE_ENV

COMMANDS = (extract, train, refresh, query, bulk, duplicates, products, query_server, serve, runs)
# Prefect's background services log under their class names (e.g. "Still processing items"
# while a run's last events drain at exit).
PREFECT_SERVICE_LOGGERS = ("EventsWorker", "APILogWorker")
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def build_parser() -> argparse.ArgumentParser:
    """The `vasrch` argument parser; each command module adds its subcommand, whose `func`
    runs it."""
    parser = argparse.ArgumentParser(
        prog="vasrch", description="Product image search: features, clusters, ranked neighbours."
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Prefect's and TensorFlow's logs, and a traceback with any error",
    )
    parser.add_argument("--version", action="version", version=f"vasrch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def _quiet(command: str) -> None:
    """Keep Prefect's and TensorFlow's logs off the terminal (without -v)."""
    os.environ[QUIET_NATIVE_ENV] = "1"
    if command != "serve":
        # flows report their outcome through the CLI; Prefect would repeat errors as tracebacks
        for logs in ("", "INTERNAL_", "SERVER_"):
            os.environ[f"PREFECT_{logs}LOGGING_LEVEL"] = "CRITICAL"
        for service in PREFECT_SERVICE_LOGGERS:  # named by class, outside Prefect's tree
            logging.getLogger(service).setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vasrch` with `argv` (None: sys.argv[1:]) and return the exit status.

    A VasrchError (config, data, run, busy workspace, usage) or an OSError (files, disk,
    ports) is the user's to fix: one `vasrch: error: ...` line (a config lists each bad field
    on a line of its own) and 2. Anything else is a bug: one `vasrch: unexpected error: ...`
    line and 1. `-v` adds the traceback and keeps Prefect's and TensorFlow's logs."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet(args.command)
    try:
        settle_config(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("vasrch: interrupted", file=sys.stderr)
        return 130
    except (VasrchError, OSError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"vasrch: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if args.verbose:
            traceback.print_exc()
        text = " ".join(str(err).split())
        print(
            f"vasrch: unexpected error: {type(err).__name__}: {text} (a bug; run with -v for "
            "the traceback)",
            file=sys.stderr,
        )
        return 1
