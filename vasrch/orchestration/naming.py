"""Flow run names that say what runs: `<flow>-<catalog folder>-<UTC time>`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path, PurePosixPath


def run_name(flow: str) -> Callable[[], str]:
    """A flow_run_name callable for `flow`: the catalog folder comes from the run's config
    (its file name when the config cannot be read; the run itself then reports why)."""

    def name() -> str:
        from prefect.runtime import flow_run

        from vasrch.config import ConfigError, load_config

        config_path = str(flow_run.parameters.get("config_path", "config"))
        try:
            catalog = load_config(config_path).catalog.path
            subject = PurePosixPath(str(catalog)).name
        except (ConfigError, OSError):
            subject = Path(config_path).stem
        return f"{flow}-{subject}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"

    return name
