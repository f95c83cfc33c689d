"""Test environment: a fresh temporary Prefect home, quiet and offline; shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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


@pytest.fixture()
def write_config(tmp_path: Path):
    """Write a YAML config in tmp_path from a dict and return its path."""
    import yaml

    def write(data: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="session")
def dataset() -> Path:
    if not DATASET.is_dir():
        pytest.skip(f"{DATASET} is absent")
    return DATASET


@pytest.fixture(scope="session")
def served_workspace(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path) -> Path:
    """A workspace with one complete run (LATEST) of the 48-image demo catalog, trained once for
    every test that only reads it (its config is config.yaml beside it)."""
    from tests.service_helpers import service_config
    from vasrch.orchestration.flows.train import train_flow

    folder = tmp_path_factory.mktemp("served")
    train_flow(str(service_config(folder, demo_catalog, folder / "ws")))
    return folder / "ws"


@pytest.fixture(scope="session")
def server(served_workspace: Path):
    """A query service on it, following LATEST: small uploads, top 5, paths in the answers."""
    from tests.service_helpers import MAX_UPLOAD, serving

    with serving(served_workspace, max_upload_bytes=MAX_UPLOAD, top_n=5, show_paths=True) as s:
        yield s


@pytest.fixture(scope="session")
def guarded(served_workspace: Path):
    """A pinned service with a token, one CORS origin, no access log, and one decode slot that
    nobody waits for."""
    from tests.service_helpers import ORIGIN, TOKEN, serving
    from vasrch.workspace import runs

    run = runs.latest_run_id(served_workspace)
    options = {"token": TOKEN, "cors_origins": (ORIGIN,), "access_log": False}
    with serving(served_workspace, run=run, decode_slots=1, decode_wait_s=0, **options) as s:
        yield s
