"""Test environment: a fresh temporary Prefect home, quiet and offline; shared fixtures."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

from tests.configs import small_run_config, write_config

if TYPE_CHECKING:
    from vasrch.orchestration.flows.train import TrainResult

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="vasrch-test-prefect-")
os.environ.pop("PREFECT_API_URL", None)
for _key, _value in {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # gcsfs asks a gRPC endpoint whether a bucket is zonal (60 s against an emulator)
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
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


class TrainedRun(NamedTuple):
    """A published run: the config file it was trained from and the train flow's result."""

    config: Path
    result: TrainResult

    @property
    def run_dir(self) -> Path:
        return self.result.run_dir

    @property
    def workspace(self) -> Path:
        return self.run_dir.parents[1]


def _run_state(run: TrainedRun) -> dict[str, str]:
    """The sha256 of every file in the run folder, and the workspace's LATEST pointer."""
    from vasrch.layout import WorkspaceLayout

    state = {
        path.relative_to(run.run_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(run.run_dir.rglob("*"))
        if path.is_file()
    }
    return state | {"LATEST": WorkspaceLayout(run.workspace).latest.read_text()}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path) -> Iterator[TrainedRun]:
    """One run trained on the demo catalog (tests/configs.py: small_run_config), shared by the
    tests that only read it; a test that changes a run or its workspace's LATEST works on a copy.
    At the end of the session the run folder and LATEST must be as trained."""
    from vasrch.orchestration.flows.train import train_flow

    config = write_config(tmp_path_factory.mktemp("small-run"), small_run_config(demo_catalog))
    run = TrainedRun(config, train_flow(str(config)))
    trained = _run_state(run)
    yield run
    assert _run_state(run) == trained, "a test changed the shared small run; copy it first"


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


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory):
    """One SeaweedFS S3 store for the session (tests/object_store.py); skips when it cannot
    start."""
    from tests.object_store import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as store:
        yield store


@pytest.fixture(scope="session")
def bucket(object_store) -> str:
    """The bucket workspace tests keep their prefixes in."""
    from tests.workspace_stores import BUCKET

    object_store.filesystem().makedirs(BUCKET, exist_ok=True)
    return BUCKET


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory):
    """One fake-gcs-server for the session (tests/cloud_emulators.py), with the workspace
    bucket; skips when it cannot start."""
    from tests.cloud_emulators import fake_gcs
    from tests.workspace_stores import BUCKET

    with fake_gcs(tmp_path_factory.mktemp("fake-gcs")) as emulator:
        emulator.filesystem().mkdir(BUCKET)
        yield emulator


@pytest.fixture(scope="session")
def azure_emulator(tmp_path_factory: pytest.TempPathFactory):
    """One Azurite blob service for the session (tests/cloud_emulators.py), with the workspace
    container; skips when it cannot be installed or started."""
    from tests.cloud_emulators import azurite
    from tests.workspace_stores import BUCKET

    with azurite(tmp_path_factory.mktemp("azurite")) as emulator:
        emulator.filesystem().mkdir(BUCKET)
        yield emulator


@pytest.fixture
def store(request: pytest.FixtureRequest):
    """A workspace store of its own (a fresh prefix) on the session's S3 store, or on the store
    a test names with `@ALL_STORES` (tests/workspace_stores.py): s3, gs or az."""
    from tests.workspace_stores import BUCKET, new_store, store_on

    kind = getattr(request, "param", "s3")
    if kind == "s3":
        request.getfixturevalue("bucket")
        return new_store(request.getfixturevalue("object_store").endpoint, BUCKET)
    emulator = request.getfixturevalue({"gs": "gcs_emulator", "az": "azure_emulator"}[kind])
    return store_on(emulator)
