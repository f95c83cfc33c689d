"""Workspaces on the test's S3 store: each test its own prefix in one bucket."""

from __future__ import annotations

import uuid

from vasrch.workspace.store import WorkspaceStore

BUCKET = "vasrch-workspaces"


def options(endpoint: str) -> dict:
    """storage_options reaching `endpoint`, botocore's own retries off (the store retries)."""
    return {
        "key": "vasrch-test",
        "secret": "vasrch-test",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }


def new_store(endpoint: str, bucket: str, **changes) -> WorkspaceStore:
    url = f"s3://{bucket}/{uuid.uuid4().hex[:10]}"
    return WorkspaceStore(url, options(endpoint), **{"backoff_s": 0.05, **changes})
