"""The nightly flow: quality gates, warm start, gone images, rejected runs, pruning."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.configs import write_config
from tests.run_records import run_record
from vasrch.config import GatesConfig
from vasrch.index.figures import Figures
from vasrch.orchestration.flows.nightly import nightly_flow
from vasrch.workspace import runs
from vasrch.workspace.promotion import gate_failure
from vasrch.workspace.run_manifest import Metrics, RunRecord


def manifest(recall: float, rejected: int, catalog: int) -> RunRecord:
    record = run_record(metrics=Metrics(leave_one_out=Figures(queries=48, recall_at_10=recall)))
    counts = record.counts.model_copy(update={"rejected": rejected, "catalog": catalog})
    return record.model_copy(update={"counts": counts})


def test_gate_passes_at_the_thresholds():
    gates = GatesConfig(min_recall_at_10=0.9, max_rejected_fraction=0.1)
    assert gate_failure(gates, manifest(0.9, 10, 100)) is None
    assert gate_failure(gates, manifest(1.0, 0, 100)) is None


def test_gate_names_each_failing_figure_and_threshold():
    gates = GatesConfig(min_recall_at_10=0.9, max_rejected_fraction=0.05)
    recall = gate_failure(gates, manifest(0.85, 0, 100))
    assert "leave_one_out_recall_at_10 0.8500" in recall and "min_recall_at_10 0.9" in recall
    assert "rejected" not in recall
    rejected = gate_failure(gates, manifest(0.95, 6, 100))
    assert "6 of 100" in rejected and "max_rejected_fraction 0.05" in rejected
    both = gate_failure(gates, manifest(0.5, 50, 100))
    assert "min_recall_at_10" in both and "max_rejected_fraction" in both
    zero = GatesConfig(max_rejected_fraction=0.0)
    assert "max_rejected_fraction 0.0" in gate_failure(zero, manifest(1.0, 1, 1000))


def centroids(run_dir: str | Path) -> np.ndarray:
    return np.load(Path(run_dir) / "index" / "centroids.npy")


def indexed_ids(run_dir: str | Path) -> set[str]:
    return set(pd.read_parquet(Path(run_dir) / "index" / "assignments.parquet")["image_id"])


@pytest.fixture(scope="module")
def nightly_config(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path):
    """A private copy of the demo catalog and a config on it (k fixed, keep 3 runs)."""
    root = tmp_path_factory.mktemp("nightly")
    catalog = root / "catalog"
    shutil.copytree(demo_catalog, catalog)
    config = {
        "catalog": {"path": str(catalog)},
        "workspace": str(root / "workspace"),
        "features": {"shard_size": 16},
        "clustering": {"num_clusters": 8, "diagnostics": {"k_max": 8}},
        "evaluation": {"sample": 48},
        "bulk": {"enabled": False},
        "runs": {"keep_last": 3},
        "nightly": {"gates": {"min_recall_at_10": 0.5, "max_rejected_fraction": 0.05}},
    }
    return write_config(root, config), catalog, root / "workspace"


def test_nightly_retrains_incrementally_and_keeps_latest_when_a_gate_fails(nightly_config):
    path, catalog, workspace = nightly_config

    first = nightly_flow(str(path))
    assert first.train.manifest.promoted and first.train.manifest.reason is None
    assert first.train.extract.new == 48 and not first.warm_start
    assert first.train.manifest.lineage.parent_run is None
    assert runs.latest_run_id(workspace) == first.train.run_id

    # Unchanged catalog: nothing extracted; a different seed would move a cold start's
    # centroids, but the warm start from the converged centroids keeps them in place.
    second = nightly_flow(str(path), {"clustering.seed": 1})
    assert second.train.extract.new == 0 and second.train.extract.reused == 48
    assert second.train.manifest.counts.unchanged == 48 and second.train.manifest.counts.new == 0
    assert second.warm_start and second.train.manifest.lineage.parent_run == first.train.run_id
    np.testing.assert_allclose(
        centroids(second.train.run_dir), centroids(first.train.run_dir), atol=1e-6
    )
    assert runs.latest_run_id(workspace) == second.train.run_id

    # Gone images drop out of the index; a bad image is rejected, under the 5 % gate.
    gone = sorted(catalog.glob("*/*_00[12].*"))[:3]
    gone_ids = {p.relative_to(catalog).as_posix() for p in gone}
    assert gone_ids <= indexed_ids(second.train.run_dir)
    for p in gone:
        p.unlink()
    (catalog / "mug" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    third = nightly_flow(str(path))
    assert third.train.manifest.promoted, third.train.manifest.reason
    assert third.train.manifest.counts.gone == 3 and third.train.manifest.counts.new == 1
    assert third.train.extract.new == 0 and third.train.extract.rejected == 1
    ids = indexed_ids(third.train.run_dir)
    assert len(ids) == 45 and not ids & gone_ids and "mug/broken.jpg" not in ids
    kept = pd.read_parquet(third.train.run_dir / "catalog.parquet")["image_id"]
    assert not set(kept) & gone_ids

    # A failing gate: the flow run fails with the reason, the run is recorded as rejected with
    # it, LATEST stays.
    state = nightly_flow(str(path), {"nightly.gates.max_rejected_fraction": 0.0}, return_state=True)
    assert state.is_failed() and "max_rejected_fraction 0.0" in state.message
    fourth = state.result(raise_on_failure=False)
    reason = fourth.train.manifest.reason
    assert not fourth.train.manifest.promoted
    assert "max_rejected_fraction 0.0" in reason and "1 of 46" in reason
    assert runs.latest_run_id(workspace) == third.train.run_id
    recorded = runs.read_manifest(fourth.train.run_dir)
    assert recorded == fourth.train.manifest
    assert recorded.status == "rejected" and recorded.reason == reason

    # keep_last 3: the oldest run is pruned, the rejected one is kept for inspection.
    assert fourth.pruned == (first.train.run_id,)
    listed = [r["run_id"] for r in runs.list_runs(workspace)]
    assert listed == [second.train.run_id, third.train.run_id, fourth.train.run_id]
