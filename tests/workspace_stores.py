"""Workspaces on the test's stores (S3; GCS and Azure emulators): each test its own prefix in
one bucket."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cloud_emulators import Emulator
from tests.run_records import run_record
from vasrch.workspace import runs
from vasrch.workspace.store import WorkspaceStore

BUCKET = "vasrch-workspaces"
# A test marked so runs on each store the `store` fixture (tests/conftest.py) can start;
# ALL_STORES_SLOW_EMULATORS leaves GCS and Azure to -m slow (for tests that wait out leases).
ALL_STORES = pytest.mark.parametrize("store", ["s3", "gs", "az"], indirect=True)
ALL_STORES_SLOW_EMULATORS = pytest.mark.parametrize(
    "store",
    ["s3", *(pytest.param(kind, marks=pytest.mark.slow) for kind in ("gs", "az"))],
    indirect=True,
)


def options(endpoint: str) -> dict:
    """storage_options reaching `endpoint`."""
    return {
        "key": "vasrch-test",
        "secret": "vasrch-test",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "config_kwargs": {"connect_timeout": 2},
    }


def new_store(endpoint: str, bucket: str, **changes) -> WorkspaceStore:
    url = f"s3://{bucket}/{uuid.uuid4().hex[:10]}"
    return WorkspaceStore(url, options(endpoint), **{"backoff_s": 0.05, **changes})


def store_on(emulator: Emulator) -> WorkspaceStore:
    """A workspace of its own in BUCKET on a GCS or Azure emulator."""
    url = f"{emulator.protocol}://{BUCKET}/{uuid.uuid4().hex[:10]}"
    return WorkspaceStore(url, emulator.storage_options, backoff_s=0.05)


def make_run(workspace: Path, payload: bytes = b"vectors") -> Path:
    """A complete local run with a few artifacts (one in a subfolder)."""
    staging = runs.start_run(workspace, runs.new_run_id())
    (staging / "index").mkdir()
    (staging / "index" / "vectors.npy").write_bytes(payload)
    (staging / "catalog.parquet").write_bytes(b"catalog " + payload)
    return runs.complete_run(staging, run_record(), parent_run=None)
