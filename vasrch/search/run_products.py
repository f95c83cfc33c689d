"""The products of a run, read from its verified catalog table alone (no index, no model): what
a query job checks its filters against before anything heavy loads or any image is sent."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from vasrch.catalog.products import FilterSpec, Products
from vasrch.layout import RunLayout
from vasrch.workspace.runs import read_artifact, read_manifest, resolve_run


def run_products(workspace: Path, run: str | None = None) -> Products:
    """The products of a complete run (LATEST by default), its catalog checked against the
    run's manifest."""
    layout = RunLayout(resolve_run(workspace, run))
    manifest = read_manifest(layout.root, verify=False)
    raw = read_artifact(layout.root, manifest, layout.catalog)
    return Products.from_catalog(pd.read_parquet(io.BytesIO(raw)))


def check_run_filters(workspace: Path, run: str | None, filters: FilterSpec | None) -> None:
    """Refuse filters the run's catalog cannot answer (UsageError naming its columns)."""
    if filters:
        run_products(workspace, run).check_filters(filters)
