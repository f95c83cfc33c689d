"""The `vasrch` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vasrch import __version__
from vasrch.orchestration.deployments import DEFAULT_POLL_S
from vasrch.quiet import QUIET_NATIVE_ENV

if TYPE_CHECKING:
    from vasrch.config import Config, FeaturesConfig, SearchConfig

# Prefect's background services log under their class names (e.g. "Still processing items"
# while a run's last events drain at exit).
PREFECT_SERVICE_LOGGERS = ("EventsWorker", "APILogWorker")
PIPED_WIDTH = 10_000  # columns of a table printed to a pipe or file: never cut
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


class UsageError(ValueError):
    """A command line that cannot be run as given."""


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """--set key=value pairs as dotted keys and YAML values (duplicate keys, aliases refused)."""
    from vasrch.config import parse_yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value (e.g. search.probes=5), got {pair!r}")
        out[key.strip()] = parse_yaml(value)
    return out


def _config(args: argparse.Namespace) -> Config:
    """The command's config and its input paths, validated before anything slow (Prefect,
    TensorFlow) starts."""
    from vasrch.config import check_inputs, load_config

    cfg = load_config(args.config, _overrides(getattr(args, "set", [])))
    check_inputs(cfg)
    return cfg


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[None]:
    """A rich progress bar on stderr (results stay alone on stdout), fed by vasrch.progress."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from vasrch import progress

    if not enabled:
        yield
        return
    bars: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:

        def sink(stage: str, advance: int, total: int | None) -> None:
            if stage not in bars:
                bars[stage] = bar.add_task(stage, total=total)
            elif total is not None:
                bar.update(bars[stage], total=total)
            if advance:
                bar.advance(bars[stage], advance)

        progress.set_sink(sink)
        try:
            yield
        finally:
            progress.set_sink(None)


def _print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in rows[0] if rows else []:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    # Piped output keeps whole cells; a terminal gets rich's fitting to its width.
    Console(width=None if sys.stdout.isatty() else PIPED_WIDTH).print(table)


def cmd_extract(args: argparse.Namespace) -> int:
    """`vasrch extract`: run the extract flow, then print its summary, this catalog's rejected
    images (each with its reason and whether the next run tries it again), the folders the scan
    left out (on stderr) and the feature cache folder; returns 0."""
    cfg = _config(args)
    from vasrch.features.extraction import cache_dir_for
    from vasrch.orchestration.flows.extract import extract_flow

    with _progress_bar(not args.no_progress):
        summary = extract_flow(str(Path(args.config).resolve()), _overrides(args.set))
    _print_table([{"": k, "value": v} for k, v in summary.as_dict().items()], "extraction")
    if len(summary.rejections):
        rows = [
            {
                "image_id": r.image_id,
                "reason": r.reason,
                "next run": "retried" if r.retry else "kept rejected",
            }
            for r in summary.rejections.itertuples(index=False)
        ]
        _print_table(rows, "rejected images")
    for warning in summary.warnings:
        print(f"vasrch: warning: {warning}", file=sys.stderr)
    print(f"features: {cache_dir_for(cfg.workspace, summary.fingerprint)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`vasrch train` (alias `run`): run the train flow, then print its counts, the run folder,
    k, the quality metrics, the bulk summary and, if the run was not promoted, why; returns 0."""
    _config(args)
    from vasrch.orchestration.flows.train import train_flow

    with _progress_bar(not args.no_progress):
        result = train_flow(str(Path(args.config).resolve()), _overrides(args.set))
    extract, manifest = result.extract, result.manifest
    print(
        f"extracted {extract.new} new, reused {extract.reused}, rejected "
        f"{extract.rejected} ({round(extract.images_per_s, 2)} images/s)"
    )
    print(f"run: {result.run_dir}")
    print(f"suggested k: {manifest.suggested_k}  chosen k: {manifest.k}")
    if manifest.sweep_note:
        print(f"note: {manifest.sweep_note}")
    _print_table(
        [{"figure": k, "value": v} for k, v in manifest.evaluation.figures().items()],
        "quality (leave_one_out: catalog photos as queries; held_out: photos not in the catalog)",
    )
    print(f"probes calibrated on {manifest.calibration.calibrated_on}")
    if manifest.bulk:
        b = manifest.bulk
        print(
            f"bulk: {b.neighbour_rows} neighbour rows, {b.duplicate_groups} near-duplicate "
            f"groups ({b.duplicate_images} images)"
        )
    if not manifest.promoted:
        print(f"not promoted to LATEST: {manifest.reason}")
    return 0


def _workspace_and_search(
    args: argparse.Namespace,
) -> tuple[Path, SearchConfig | None, FeaturesConfig]:
    """The workspace from --workspace or --config, the config's `search` section (None
    without a config: its defaults and the run's calibration then apply) and its `features`
    section (how query images are decoded and batched; defaults without a config)."""
    from vasrch.config import FeaturesConfig, load_config

    if args.workspace:
        return Path(args.workspace), None, FeaturesConfig()
    if args.config:
        cfg = load_config(args.config)
        return cfg.workspace, cfg.search, cfg.features
    raise UsageError("give --config CONFIG or --workspace FOLDER")


def _workspace(args: argparse.Namespace) -> Path:
    return _workspace_and_search(args)[0]


def cmd_query(args: argparse.Namespace) -> int:
    """`vasrch query`: rank the neighbours of the query images with a run and print them as a table,
    CSV or JSON; returns 0, 1 when some images could not be read, 2 when none."""
    import json

    workspace, search, features = _workspace_and_search(args)
    from vasrch.catalog.products import parse_filters
    from vasrch.query_jobs.job import query_files, search_files
    from vasrch.search.searcher import open_run

    filters = parse_filters(args.filter)
    searcher = open_run(workspace, args.run, search=search)
    params = searcher.params(args.top_n, args.probes)
    files = query_files(args.images)
    answers = search_files(searcher, files, params, features, filters, args.show_paths)
    for rejected in answers.rejected:
        print(f"vasrch: skipped {rejected['query']}: {rejected['reason']}", file=sys.stderr)
    if not answers.answered:
        return 2
    table = answers.table
    if args.format == "json":
        print(json.dumps(table.to_dict("records"), indent=2))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        title = f"run {searcher.run_id} · top {params.top_n} · {params.probes} probes"
        _print_table(table.to_dict("records"), title)
    return 0 if not answers.rejected else 1


def cmd_bulk(args: argparse.Namespace) -> int:
    """`vasrch bulk`: run the bulk flow with a run (LATEST by default) and print what it wrote and
    where; returns 0."""
    _config(args)
    from vasrch.orchestration.flows.bulk import bulk_flow

    with _progress_bar(not args.no_progress):
        result = bulk_flow(
            str(Path(args.config).resolve()), args.run, args.top_n, args.probes, args.csv
        )
    print(
        f"bulk for run {result.run_id}: {result.summary.neighbour_rows} neighbour rows, "
        f"{result.summary.duplicate_groups} near-duplicate groups"
    )
    print(f"written to {result.out_dir}")
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    """`vasrch duplicates`: the near-duplicate groups of a saved run (LATEST by default) from its
    newest bulk neighbours, at --threshold (else bulk.duplicate_threshold), as a table, CSV or
    JSON; nothing is re-run. Returns 0."""
    import json

    from vasrch.duplicates.groups import run_groups
    from vasrch.workspace.runs import resolve_run

    cfg = _config(args)
    threshold = cfg.bulk.duplicate_threshold if args.threshold is None else args.threshold
    folder = resolve_run(cfg.workspace, args.run)
    table, source = run_groups(cfg.workspace, folder, threshold)
    if not args.show_paths:
        table = table.drop(columns="path")
    if args.format == "json":
        print(json.dumps(table.to_dict("records"), indent=2))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif table.empty:
        print(f"no near-duplicate groups at duplicate score >= {threshold} in {source.root}")
    else:
        title = (
            f"run {folder.name} · {table['group_id'].nunique()} groups at duplicate score >= "
            f"{threshold} · neighbours from {source.root}"
        )
        _print_table(table.to_dict("records"), title)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """`vasrch runs`: list the runs, show one's manifest after verifying its artifacts, promote one
    to LATEST (after verifying it), or prune to --keep (else the config's runs.keep_last)."""
    from vasrch.workspace import runs
    from vasrch.workspace.lock import workspace_lock

    workspace = _workspace(args)
    if args.action == "list":
        rows = runs.list_runs(workspace)
        if rows:
            _print_table(rows, f"runs in {runs.runs_dir(workspace)}")
        else:
            print(f"no runs in {runs.runs_dir(workspace)}")
    elif args.action == "show":
        folder = runs.resolve_run(workspace, args.run)
        manifest = runs.read_manifest(folder, verify=True)
        print(manifest.model_dump_json(indent=2, exclude={"artifacts", "config"}))
        print(f"artifacts verified: {folder}")
    elif args.action == "promote":
        if not args.run:
            raise UsageError("runs promote needs the id of the run to promote")
        before = runs.latest_run_id(workspace)
        with workspace_lock(workspace, "vasrch runs promote"):
            runs.promote(workspace, args.run)
        print(f"LATEST: {args.run} (was {before or '-'})")
    else:
        from vasrch.config import load_config

        keep = args.keep
        if keep is None and args.config:
            keep = load_config(args.config).runs.keep_last
        if keep is None:
            raise UsageError("runs prune needs --keep N or --config")
        with workspace_lock(workspace, "vasrch runs prune"):
            removed = runs.prune_runs(workspace, keep)
        print(f"removed {len(removed)}: {', '.join(removed) or '-'}")
    return 0


def cmd_query_server(args: argparse.Namespace) -> int:
    """`vasrch query-server`: serve queries over HTTP until interrupted; returns 0."""
    from vasrch.service.runner import run_query_server
    from vasrch.service.settings import TOKEN_ENV, ServiceSettings

    workspace, search, _ = _workspace_and_search(args)
    run_query_server(
        ServiceSettings(
            workspace=workspace,
            run=args.run,
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
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`vasrch serve`: validate the config, then serve the Prefect deployments until stopped;
    returns 0."""
    _config(args)
    from vasrch.orchestration.deployments import serve_deployments

    serve_deployments(
        str(Path(args.config).resolve()),
        limit=args.limit,
        files_host=args.files_host,
        files_port=args.files_port,
        poll_s=args.poll_interval,
        query_port=args.query_port if args.with_query_service else None,
    )
    return 0


def _add_workspace(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config whose workspace to use")
    p.add_argument("--workspace", "-w", help="workspace folder (instead of --config)")


def _add_config(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("config", help="YAML config file (see config/demo.yaml)")
    else:
        p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set search.probes=5 (repeatable)",
    )


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _above(low: float, what: str, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: `what` (a number) above `low`, and at most `high` when given."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > low and (high is None or value <= high)):
            bounds = f"in ({low:g}, {high:g}]" if high is not None else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


_threshold = _above(0, "a number", high=1)  # a duplicate score threshold in (0, 1]
_seconds = _above(0, "a number of seconds")


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    value = _count(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `vasrch` argument parser; each subcommand sets `func` to its cmd_* function."""
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

    p = sub.add_parser("extract", help="extract feature shards for the configured catalog")
    _add_config(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "train",
        aliases=["run"],
        help="run the train flow: extract, cluster, index, evaluate, bulk (alias: run)",
    )
    _add_config(p, positional=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("query", help="rank the catalog products most similar to query images")
    p.add_argument("images", nargs="+", help="query image files or folders (searched recursively)")
    _add_workspace(p)
    p.add_argument("--run", help="run id (default: LATEST)")
    p.add_argument(
        "--top-n",
        type=_count(1),
        help="neighbours per query (default: the config's search.top_n, 10)",
    )
    p.add_argument(
        "--probes",
        type=_count(1),
        help="clusters searched (default: the config's search.probes; auto: the run's "
        "calibrated probes)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="output format (default table)",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="COLUMN=VALUE[,VALUE...]",
        help="only products whose metadata column has one of the values (repeatable: every "
        "filter must match), e.g. --filter category=shoes",
    )
    p.add_argument("--show-paths", action="store_true", help="add each matched photo's file path")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("bulk", help="neighbours and near-duplicate groups for a whole catalog")
    _add_config(p)
    p.add_argument("--run", help="run id (default: LATEST)")
    p.add_argument("--top-n", type=_count(1), help="neighbours per image (default: bulk.top_n)")
    p.add_argument("--probes", type=_count(1), help="clusters searched (default: bulk.probes)")
    p.add_argument("--csv", action="store_true", help="also write neighbours.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bulk)

    p = sub.add_parser(
        "duplicates", help="near-duplicate groups of a saved run, from its bulk neighbours"
    )
    _add_config(p)
    p.add_argument("--run", help="run id (default: LATEST)")
    p.add_argument(
        "--threshold",
        type=_threshold,
        help="duplicate score at or above which two images are near-duplicates "
        "(default: the config's bulk.duplicate_threshold)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="output format (default table)",
    )
    p.add_argument("--show-paths", action="store_true", help="add each photo's file path")
    p.set_defaults(func=cmd_duplicates)

    p = sub.add_parser("query-server", help="serve ranked queries over HTTP with a warm model")
    _add_workspace(p)
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
        type=_count(0),
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
        "--port", type=_port, default=8765, help="TCP port; 0 picks a free one (default 8765)"
    )
    p.add_argument(
        "--top-n",
        type=_count(1),
        help="answers per query unless the request says ?top_n= (default: the config's "
        "search.top_n, 10)",
    )
    p.add_argument(
        "--probes",
        type=_count(1),
        help="nearest clusters searched unless the request says ?probes= (default: the "
        "config's search.probes; auto: the run's calibrated probes)",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=_count(1),
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
    p.set_defaults(func=cmd_query_server)

    p = sub.add_parser(
        "serve",
        help="serve the train, nightly, bulk and query deployments to the Prefect server at "
        "PREFECT_API_URL (runs started from the UI execute in this process)",
    )
    p.add_argument("config", help="YAML config the deployments run with (nightly's cron too)")
    p.add_argument("--limit", type=_count(1), help="most flow runs at once (default: no cap)")
    p.add_argument(
        "--files-host",
        default="127.0.0.1",
        help="address of the read-only workspace file server the UI's links open",
    )
    p.add_argument(
        "--files-port", type=_port, default=8766, help="its port (default 8766; 0: any free one)"
    )
    p.add_argument(
        "--poll-interval",
        type=_seconds,
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
        type=_port,
        default=8765,
        help="port of that service (default 8765; 0: any free one)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("runs", help="list, show, promote or prune versioned runs")
    p.add_argument("action", choices=["list", "show", "promote", "prune"], help="what to do")
    p.add_argument(
        "run", nargs="?", help="run id for show (default: LATEST) and promote (required)"
    )
    _add_workspace(p)
    p.add_argument(
        "--keep",
        type=_count(0),
        help="prune: complete runs to keep besides LATEST (default runs.keep_last)",
    )
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vasrch` with `argv` (None: sys.argv[1:]) and return the exit status.

    A user or environment mistake (config, files, disk, ports, weights, runs) prints one
    `vasrch: error: ...` line and returns 2; anything else is a bug: one line and 1. `-v` adds
    the traceback and keeps Prefect's and TensorFlow's logs, which are otherwise quiet."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    if not args.verbose:
        os.environ[QUIET_NATIVE_ENV] = "1"
        if args.command != "serve":
            # flows report their outcome through the CLI; Prefect would repeat errors as tracebacks
            for logs in ("", "INTERNAL_", "SERVER_"):
                os.environ[f"PREFECT_{logs}LOGGING_LEVEL"] = "CRITICAL"
            for service in PREFECT_SERVICE_LOGGERS:  # named by class, outside Prefect's tree
                logging.getLogger(service).setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("vasrch: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose:
            traceback.print_exc()
        user_mistake = isinstance(err, (ValueError, OSError, RuntimeError, LookupError))
        text = " ".join(str(err).split()) if not user_mistake else str(err)
        if not user_mistake:
            text = f"{type(err).__name__}: {text} (unexpected; run with -v for the traceback)"
        print(f"vasrch: error: {text}", file=sys.stderr)
        return 2 if user_mistake else 1


if __name__ == "__main__":
    sys.exit(main())
