"""Test environment: a fresh temporary Prefect home, quiet and offline; shared fixtures."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import pytest

from tests.configs import write_config

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="vasrch-test-prefect-")
os.environ.pop("PREFECT_API_URL", None)
for _key, _value in {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}.items():
    os.environ[_key] = _value

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clothing-small"


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated demo catalog (8 classes x 6 images), shared by the session."""
    from vasrch.catalog.demo import generate_demo_catalog

    folder = tmp_path_factory.mktemp("demo") / "catalog"
    generate_demo_catalog(folder, per_class=6)
    return folder


@pytest.fixture(name="write_config")
def write_config_in_tmp_path(tmp_path: Path):
    """Write a YAML config in tmp_path from a dict and return its path."""
    return functools.partial(write_config, tmp_path)


@pytest.fixture(scope="session")
def dataset() -> Path:
    if not DATASET.is_dir():
        pytest.skip(f"{DATASET} is absent")
    return DATASET
