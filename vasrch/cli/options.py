"""Options several commands share: the config (positional or --config), the workspace, --set,
and argparse types for counts, numbers and ports."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vasrch.addresses import is_url
from vasrch.errors import UsageError

if TYPE_CHECKING:
    from vasrch.config import Config, FeaturesConfig, SearchConfig
    from vasrch.workspace.store import WorkspaceStore

CONFIG_SUFFIXES = (".yaml", ".yml")
# A read-only command with a verified copy of LATEST in its cache gives up on the store fast:
# one retry, 1 s to connect and 2 s to read, so at most about 2 x 2 s + 0.2 s before it warns
# and uses the cache (the query service keeps the store's full retries: it serves meanwhile).
QUICK_READS = {"retries": 1, "connect_timeout_s": 1.0, "read_timeout_s": 2.0}
Subparsers = argparse._SubParsersAction  # what each command module's register() adds itself to


def is_config_path(text: str) -> bool:
    """Whether a positional argument names a config: it ends in .yaml or .yml (no image file
    or run id does)."""
    return text.lower().endswith(CONFIG_SUFFIXES)


def add_config(p: argparse.ArgumentParser, *, required: bool, among: str | None = None) -> None:
    """The config as `CMD CONFIG` or `CMD --config CONFIG`. With `among` (the name of the
    command's own positional list), a .yaml/.yml entry of that list is the config instead of
    a positional of its own. settle_config then sets args.config."""
    if among is None:
        p.add_argument("config_positional", nargs="?", metavar="CONFIG", help="YAML config file")
    p.add_argument(
        "--config",
        "-c",
        dest="config_option",
        metavar="CONFIG",
        help="YAML config file (the same as giving it as an argument)",
    )
    p.set_defaults(config_required=required, config_among=among)


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set search.probes=5 (repeatable)",
    )


def add_workspace(p: argparse.ArgumentParser, among: str | None = None) -> None:
    """The config (optional) or --workspace: commands that only need a workspace."""
    add_config(p, required=False, among=among)
    p.add_argument(
        "--workspace",
        "-w",
        help="workspace folder, or an s3:// prefix (its runs are read through the local cache; "
        "credentials and endpoint from the AWS_* variables), instead of a config",
    )


def settle_config(args: argparse.Namespace) -> None:
    """Set args.config from the config positional, --config, or a .yaml/.yml entry of the
    command's positional list (taken out of it); a config given twice differently, or none
    where one is required, is a UsageError."""
    given = [
        c for c in (getattr(args, "config_positional", None), args.config_option) if c is not None
    ]
    if args.config_among:
        entries = getattr(args, args.config_among)
        given += [e for e in entries if is_config_path(e)]
        setattr(args, args.config_among, [e for e in entries if not is_config_path(e)])
    if len(set(given)) > 1:
        raise UsageError(f"give one config, got {', '.join(given)}")
    args.config = given[0] if given else None
    if args.config is None and args.config_required:
        raise UsageError(f"give a config: vasrch {args.command} CONFIG (or --config CONFIG)")


def overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """--set key=value pairs as dotted keys and YAML values (duplicate keys, aliases refused)."""
    from vasrch.config import parse_yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value (e.g. search.probes=5), got {pair!r}")
        out[key.strip()] = parse_yaml(value)
    return out


def load(args: argparse.Namespace) -> Config:
    """The command's config with its --set overrides and its input paths, validated before
    anything slow (Prefect, TensorFlow) starts."""
    from vasrch.config import check_inputs, load_config

    cfg = load_config(args.config, overrides(getattr(args, "set", [])))
    check_inputs(cfg)
    return cfg


def config_path(args: argparse.Namespace) -> str:
    """The config's absolute path, as flows (which may run elsewhere) take it."""
    return str(Path(args.config).resolve())


def workspace_and_search(
    args: argparse.Namespace,
) -> tuple[Path, SearchConfig | None, FeaturesConfig]:
    """The workspace from --workspace or the config, the config's `search` section (None
    without a config: its defaults and the run's calibration then apply) and its `features`
    section (how query images are decoded and batched; defaults without a config)."""
    from vasrch.config import FeaturesConfig, load_config

    store = workspace_store(args)
    if store is not None:
        _follow(store, args.local_workspace, getattr(args, "run", None))
    if args.workspace:
        return args.local_workspace or Path(args.workspace), None, FeaturesConfig()
    if args.config:
        cfg = load_config(args.config)
        return cfg.workspace, cfg.search, cfg.features
    raise UsageError("give a config (CONFIG or --config CONFIG) or --workspace FOLDER")


def workspace_store(args: argparse.Namespace) -> WorkspaceStore | None:
    """The object store the command's workspace lives in (--workspace s3://... or the config's
    `workspace`), None for a folder; sets args.local_workspace to its local cache."""
    from vasrch.config import default_workspace_cache, load_config
    from vasrch.workspace.store import WorkspaceStore

    args.local_workspace = None
    if args.workspace and is_url(args.workspace):
        args.local_workspace = default_workspace_cache(args.workspace)
        return WorkspaceStore(args.workspace)
    if not args.workspace and args.config:
        cfg = load_config(args.config)
        if cfg.workspace_url is not None:
            args.local_workspace = cfg.workspace
            return WorkspaceStore(cfg.workspace_url, cfg.workspace_storage_options)
    return None


def _follow(store: WorkspaceStore, cache: Path, run: str | None) -> None:
    """Bring the cache of a workspace in object storage up to date with the store's LATEST (or
    fetch `run`); when the store cannot be reached, say so and go on with what the cache
    holds: quickly (QUICK_READS) when the cache holds a verified copy of LATEST's run."""
    from vasrch.workspace.remote_runs import follow_or_why

    if _holds_latest(cache):
        store = dataclasses.replace(store, **QUICK_READS)
    problem = follow_or_why(store, cache, run)
    if problem is not None:
        print(f"warning: using the cached runs in {cache}: {problem}", file=sys.stderr)


def _holds_latest(cache: Path) -> bool:
    """Whether the cache's LATEST names a whole run (verified when it was fetched: a fetched run
    takes its name only once every file matched its manifest)."""
    from vasrch.layout import WorkspaceLayout
    from vasrch.workspace.runs import RunError, latest_run_id

    try:
        latest = latest_run_id(cache)
    except RunError:
        return False
    return latest is not None and WorkspaceLayout(cache).run(latest).manifest.is_file()


def count(minimum: int) -> Callable[[str], int]:
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


def above(low: float, what: str, high: float | None = None) -> Callable[[str], float]:
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


score_threshold = above(0, "a number", high=1)  # a duplicate score threshold in (0, 1]
seconds = above(0, "a number of seconds")


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    value = count(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0 to 65535, got {value}")
    return value


def add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="output format (default table)",
    )
    p.add_argument(
        "--raw-csv",
        action="store_true",
        help="CSV cells as they are: no leading ' before text starting with =, +, -, @ (which "
        "a spreadsheet would run as a formula); for programs that read the CSV",
    )


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
