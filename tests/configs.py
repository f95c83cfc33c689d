"""Config files for tests: the one writer of YAML configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_config(folder: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write `data` as the YAML config `folder/name` (creating the folder); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path
