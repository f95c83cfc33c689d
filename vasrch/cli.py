"""The `vasrch` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value (e.g. search.probes=5), got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[None]:
    """A rich progress bar fed by vasrch.progress while the block runs."""
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
    Console().print(table)


def cmd_extract(args: argparse.Namespace) -> int:
    from vasrch.config import load_config
    from vasrch.flows.extract import extract_flow

    cfg = load_config(args.config, _overrides(args.set))
    with _progress_bar(not args.no_progress):
        summary = extract_flow(str(Path(args.config).resolve()), _overrides(args.set))
    _print_table([{"": k, "value": v} for k, v in summary.items()], "extraction")
    from vasrch.features import cache_dir_for, read_rejections

    rejections = read_rejections(cache_dir_for(cfg.workspace, summary["fingerprint"]))
    if len(rejections):
        _print_table(rejections[["image_id", "reason"]].to_dict("records"), "rejected images")
    print(f"features: {cache_dir_for(cfg.workspace, summary['fingerprint'])}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vasrch.flows.train import train_flow

    with _progress_bar(not args.no_progress):
        result = train_flow(str(Path(args.config).resolve()), _overrides(args.set))
    extract = result["extract"]
    print(
        f"extracted {extract['new']} new, reused {extract['reused']}, rejected "
        f"{extract['rejected']} ({extract['images_per_s']} images/s)"
    )
    print(f"run: {result['run_dir']}")
    print(f"suggested k: {result['suggested_k']}  chosen k: {result['k']}")
    _print_table([{"metric": k, "value": v} for k, v in result["metrics"].items()], "quality")
    if result["bulk"]:
        b = result["bulk"]
        print(
            f"bulk: {b['neighbour_rows']} neighbour rows, {b['duplicate_groups']} near-duplicate "
            f"groups ({b['duplicate_images']} images)"
        )
    if not result["promoted"]:
        print(f"not promoted to LATEST: {result['reason']}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vasrch", description="Product image search: features, clusters, ranked neighbours."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract feature shards for the configured catalog")
    _add_config(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("run", help="run the train flow: extract, cluster, index, evaluate, bulk")
    _add_config(p, positional=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from vasrch.config import ConfigError
    from vasrch.runs import RunError

    try:
        return args.func(args)
    except (ConfigError, RunError, FileNotFoundError, ValueError) as err:
        print(f"vasrch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
