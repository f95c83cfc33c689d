import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.run_records import run_record
from vasrch.config import GatesConfig
from vasrch.hashing import sha256_file
from vasrch.index.figures import Figures
from vasrch.layout import WorkspaceLayout
from vasrch.workspace import runs
from vasrch.workspace.promotion import gate_failure
from vasrch.workspace.run_manifest import Calibration, RunManifest, RunRecord

BEFORE_ISSUE_18 = Path(__file__).parent / "data" / "manifest_before_issue18.json"


def _run(ws: Path, payload: str) -> str:
    time.sleep(0.002)
    run_id = runs.new_run_id()
    staging = runs.start_run(ws, run_id)
    (staging / "index").mkdir()
    (staging / "index" / "data.txt").write_text(payload)
    runs.complete_run(staging, run_record(), parent_run=None)
    return run_id


def test_run_appears_only_when_complete_and_ids_sort_by_time(tmp_path: Path) -> None:
    run_id = runs.new_run_id()
    staging = runs.start_run(tmp_path, run_id)
    assert runs.list_runs(tmp_path) == []
    with pytest.raises(runs.RunError, match="not found or incomplete"):
        runs.resolve_run(tmp_path, run_id)
    with pytest.raises(runs.RunError, match="no artifacts"):
        runs.complete_run(staging, run_record(), parent_run=None)
    (staging / "model.joblib").write_bytes(b"model")
    final = runs.complete_run(staging, run_record(), parent_run="20250101T000000000Z-abcdef")
    assert final.name == run_id and not staging.exists()
    manifest = runs.read_manifest(final)
    assert manifest.run_id == run_id
    assert (
        RunRecord(**manifest.model_dump(exclude={"run_id", "lineage", "artifacts"})) == run_record()
    )
    assert manifest.lineage.versions["numpy"] != "not installed"
    assert manifest.lineage.parent_run == "20250101T000000000Z-abcdef"
    assert manifest.artifacts == {"model.joblib": sha256_file(final / "model.joblib")}
    time.sleep(0.002)
    assert runs.new_run_id() > run_id


def test_the_manifest_keeps_integers_integers_and_times_to_the_millisecond(tmp_path: Path) -> None:
    folder = runs.runs_dir(tmp_path) / _run(tmp_path, "x")
    raw = json.loads((folder / "manifest.json").read_text())
    assert raw["calibration"] == {
        "probes": 2,
        "recall_at_10": 0.96,
        "calibrated_on": "10 catalog photos",
    }
    assert type(raw["calibration"]["probes"]) is int
    assert type(raw["metrics"]["leave_one_out"]["queries"]) is int
    assert all(type(v) is int for v in raw["counts"].values())
    assert raw["timings"] == {
        "extract_s": 1.235,
        "diagnostics_s": 0.5,
        "train_s": 0.25,
        "evaluate_s": 0.125,
        "bulk_s": None,
    }
    assert RunManifest.model_validate(raw) == runs.read_manifest(folder)


def test_a_run_written_before_the_typed_manifest_still_loads(tmp_path: Path) -> None:
    old = json.loads(BEFORE_ISSUE_18.read_text())
    assert old["metrics"]["probes"] == 7.0 and old["metrics"]["leave_one_out_queries"] == 12.0
    folder = runs.runs_dir(tmp_path) / old["run_id"]
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(b"model")
    old["artifacts"] = {"model.joblib": sha256_file(folder / "model.joblib")}
    (folder / "manifest.json").write_text(json.dumps(old, indent=2))
    runs.set_latest(tmp_path, old["run_id"])

    manifest = runs.read_manifest(folder, verify=True)
    assert manifest.calibration == Calibration(
        probes=7, recall_at_10=1.0, calibrated_on="1 held-out photos"
    )
    assert type(manifest.calibration.probes) is int
    assert manifest.metrics.leave_one_out.queries == 12
    assert manifest.metrics.leave_one_out.precision_at_10 == pytest.approx(0.275)
    assert manifest.metrics.held_out == Figures(queries=1, recall_at_10=1.0)
    assert manifest.lineage.parent_run is None
    assert manifest.lineage.created.isoformat() == old["completed"]
    assert manifest.lineage.versions == old["versions"]
    assert (manifest.counts.indexed, manifest.timings.bulk_s) == (12, 0.26)
    assert manifest.bulk.neighbour_rows == 120 and manifest.backbone.image_size == 32
    assert manifest.config == old["config"] and manifest.k == 7
    [row] = runs.list_runs(tmp_path)
    assert (row["status"], row["k"], row["images"], row["figures"]) == (
        "complete",
        7,
        12,
        "held-out",
    )
    assert gate_failure(GatesConfig(), manifest) is None
    assert "held_out_precision_at_10 is unknown" in gate_failure(
        GatesConfig(min_precision_at_10=0.5), manifest
    )
    rewritten = json.loads(manifest.model_dump_json())
    assert rewritten["calibration"]["probes"] == 7
    assert type(rewritten["metrics"]["leave_one_out"]["queries"]) is int
    assert RunManifest.model_validate(rewritten) == manifest


def test_a_manifest_missing_a_field_is_damaged_and_names_it(tmp_path: Path) -> None:
    from vasrch.search.searcher import open_run

    run_id = _run(tmp_path, "x")
    path = runs.runs_dir(tmp_path) / run_id / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["backbone"]
    path.write_text(json.dumps(manifest))
    damaged = r"damaged \(not a run manifest: backbone: Field required\)"
    with pytest.raises(runs.RunError, match=damaged):
        runs.read_manifest(path.parent)
    with pytest.raises(runs.RunError, match=damaged):
        open_run(tmp_path, run_id)
    [row] = runs.list_runs(tmp_path)
    assert row["status"].startswith(f"damaged: {path}: damaged (not a run manifest")


def test_no_latest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(runs.RunError, match="train one first"):
        runs.resolve_run(tmp_path)


def test_missing_artifact_detected(tmp_path: Path) -> None:
    run_id = _run(tmp_path, "x")
    (runs.runs_dir(tmp_path) / run_id / "index" / "data.txt").unlink()
    with pytest.raises(runs.RunError, match=r"index/data\.txt is missing"):
        runs.read_manifest(runs.resolve_run(tmp_path, run_id))


def test_prune_keeps_newest_and_latest_and_removes_abandoned_staging(tmp_path: Path) -> None:
    ids = [_run(tmp_path, str(i)) for i in range(5)]
    runs.set_latest(tmp_path, ids[0])
    abandoned = runs.start_run(tmp_path, runs.new_run_id())
    queries = WorkspaceLayout(tmp_path).queries
    fresh_job, old_job = queries / ".staging-a", queries / ".staging-b"
    fresh_job.mkdir(parents=True)
    old_job.mkdir()
    old = time.time() - 2 * 3600
    os.utime(old_job, (old, old))
    removed = runs.prune_runs(tmp_path, keep_last=2)
    left = [r["run_id"] for r in runs.list_runs(tmp_path)]
    assert left == [ids[0], ids[3], ids[4]]
    assert set(removed) == {ids[1], ids[2], abandoned.name, old_job.name}
    assert not abandoned.exists() and fresh_job.is_dir() and not old_job.exists()
    assert runs.latest_run_id(tmp_path) == ids[0]


def test_promote_verifies_and_latest_names_only_runs_of_its_workspace(tmp_path: Path) -> None:
    first, second = _run(tmp_path, "a"), _run(tmp_path, "b")
    runs.set_latest(tmp_path, second)
    assert runs.promote(tmp_path, first).name == first
    assert runs.latest_run_id(tmp_path) == first
    (runs.runs_dir(tmp_path) / second / "index" / "data.txt").write_text("tampered")
    with pytest.raises(runs.RunError, match="does not match its sha256"):
        runs.promote(tmp_path, second)
    assert runs.latest_run_id(tmp_path) == first
    with pytest.raises(runs.RunError, match="not a run id"):
        runs.promote(tmp_path, "../../other/runs/x")
    WorkspaceLayout(tmp_path).latest.write_text("../../other-workspace/runs/" + first)
    with pytest.raises(runs.RunError, match="not a run id of this workspace"):
        runs.resolve_run(tmp_path)


def test_a_second_writer_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    import subprocess
    import sys

    from vasrch.workspace.lock import WorkspaceBusy, workspace_lock

    hold = (
        "import sys, time; from pathlib import Path; from vasrch.workspace.lock import "
        "workspace_lock\nwith workspace_lock(Path(sys.argv[1]), 'test holder'):\n"
        "    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        busy = pytest.raises(WorkspaceBusy, match=rf"test holder \(pid {holder.pid}")
        with busy, workspace_lock(tmp_path, "second writer", timeout_s=1.0):
            pass
        assert time.monotonic() - start >= 1.0
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock with the process
        holder.wait()
    with workspace_lock(tmp_path, "after the holder died", timeout_s=5.0):
        pass


def test_damaged_runs_are_listed_per_run_and_skipped_by_prune(tmp_path: Path, capsys) -> None:
    from vasrch.cli import main

    ids = [_run(tmp_path, str(i)) for i in range(5)]
    runs.set_latest(tmp_path, ids[4])
    folder = runs.runs_dir(tmp_path)
    (folder / ids[0] / "manifest.json").write_text('{"run_id": "x", "artifacts": {')
    manifest = json.loads((folder / ids[1] / "manifest.json").read_text())
    (folder / ids[1] / "manifest.json").write_text(json.dumps({**manifest, "artifacts": {}}))
    del manifest["artifacts"]
    (folder / ids[2] / "manifest.json").write_text(json.dumps(manifest))
    rows = {r["run_id"]: r for r in runs.list_runs(tmp_path)}
    assert len(rows) == 5
    assert rows[ids[0]]["status"].startswith(f"damaged: {folder / ids[0] / 'manifest.json'}")
    assert "not valid JSON" in rows[ids[0]]["status"]
    for damaged in ids[1:3]:
        assert rows[damaged]["status"] == (
            f"damaged: {folder / damaged / 'manifest.json'}: damaged (it lists no artifacts); "
            "restore it or delete the run folder"
        )
    assert rows[ids[3]]["status"] == "complete" and rows[ids[4]]["latest"]
    assert runs.prune_runs(tmp_path, keep_last=1) == [ids[3]]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [*ids[:3], ids[4]]
    assert main(["runs", "list", "-w", str(tmp_path)]) == 0
    assert main(["runs", "show", ids[0], "-w", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: damaged (not valid JSON" in err


def test_previous_catalog_and_warm_start_read_only_verified_bytes(tmp_path: Path) -> None:
    from vasrch.config import ClusteringConfig
    from vasrch.workspace.promotion import warm_start

    staging = runs.start_run(tmp_path, runs.new_run_id())
    pd.DataFrame({"image_id": ["a.jpg"], "sha256": ["0" * 64]}).to_parquet(
        staging / "catalog.parquet"
    )
    (staging / "index").mkdir()
    np.save(staging / "index" / "centroids.npy", np.eye(2, dtype=np.float32))
    final = runs.complete_run(staging, run_record(k=2), parent_run=None)
    runs.set_latest(tmp_path, final.name)
    clustering = ClusteringConfig(num_clusters=2)
    assert list(runs.previous_catalog(tmp_path)["image_id"]) == ["a.jpg"]
    start = warm_start(tmp_path, "fp", clustering, centre=True)
    assert start.centroids.shape == (2, 2) and start.problem is None
    pd.DataFrame({"image_id": ["b.jpg"], "sha256": ["1" * 64]}).to_parquet(
        final / "catalog.parquet"
    )
    with pytest.raises(runs.RunError, match=r"catalog\.parquet does not match its sha256"):
        runs.previous_catalog(tmp_path)
    np.save(final / "index" / "centroids.npy", 2 * np.eye(2, dtype=np.float32))
    cold = warm_start(tmp_path, "fp", clustering, centre=True)
    assert cold.centroids is None and cold.previous_run == final.name
    assert "centroids.npy does not match its sha256" in cold.problem
