"""Config files for tests: the one writer of YAML configs, and the config of the shared small run
(the `small_run` fixture in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# What the shared small run sets in `search` and `bulk`: values that differ from each other and
# from the defaults, so a test can tell which section an entry point used.
SMALL_RUN_SEARCH = {"top_n": 4, "probes": 5}
SMALL_RUN_BULK = {"enabled": True, "top_n": 5, "probes": "auto"}


def write_config(folder: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write `data` as the YAML config `folder/name` (creating the folder); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def small_run_config(catalog: Path, **sections: Any) -> dict[str, Any]:
    """The shared small run's config on `catalog` (workspace `ws` beside the config file): 16
    images per shard, k swept from 2 to 12, all 48 demo images as evaluation queries; `sections`
    replace whole sections."""
    return {
        "catalog": {"path": str(catalog)},
        "workspace": "ws",
        "features": {"shard_size": 16},
        "clustering": {"diagnostics": {"k_min": 2, "k_max": 12, "k_step": 1}},
        "evaluation": {"sample": 48},
        "search": SMALL_RUN_SEARCH,
        "bulk": SMALL_RUN_BULK,
        **sections,
    }
