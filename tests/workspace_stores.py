"""Workspaces on the test's S3 store: each test its own prefix in one bucket."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.run_records import run_record
from vasrch.workspace import runs
from vasrch.workspace.store import WorkspaceStore

BUCKET = "vasrch-workspaces"


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


def make_run(workspace: Path, payload: bytes = b"vectors") -> Path:
    """A complete local run with a few artifacts (one in a subfolder)."""
    staging = runs.start_run(workspace, runs.new_run_id())
    (staging / "index").mkdir()
    (staging / "index" / "vectors.npy").write_bytes(payload)
    (staging / "catalog.parquet").write_bytes(b"catalog " + payload)
    return runs.complete_run(staging, run_record(), parent_run=None)
