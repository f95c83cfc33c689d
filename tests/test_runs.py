import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vasrch.layout import WorkspaceLayout
from vasrch.workspace import runs


def _run(ws: Path, payload: str) -> str:
    time.sleep(0.002)
    run_id = runs.new_run_id()
    staging = runs.start_run(ws, run_id)
    (staging / "index").mkdir()
    (staging / "index" / "data.txt").write_text(payload)
    runs.complete_run(staging, {"k": 3, "counts": {"indexed": 10}, "metrics": {}})
    return run_id


def test_run_appears_only_when_complete_and_ids_sort_by_time(tmp_path: Path) -> None:
    run_id = runs.new_run_id()
    staging = runs.start_run(tmp_path, run_id)
    assert runs.list_runs(tmp_path) == []
    with pytest.raises(runs.RunError, match="not found or incomplete"):
        runs.resolve_run(tmp_path, run_id)
    with pytest.raises(runs.RunError, match="no artifacts"):
        runs.complete_run(staging, {"k": 2})
    (staging / "model.joblib").write_bytes(b"model")
    final = runs.complete_run(staging, {"k": 2})
    assert final.name == run_id and not staging.exists()
    manifest = runs.read_manifest(final)
    assert manifest["versions"]["numpy"] != "not installed"
    time.sleep(0.002)
    assert runs.new_run_id() > run_id


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
    from vasrch.search.searcher import open_run

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
    with pytest.raises(runs.RunError, match="no usable backbone"):
        open_run(tmp_path, ids[4])  # artifacts verified, but no backbone to embed queries with
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
    config = {"clustering": {"n_components": None}, "search": {"centre": True}}
    final = runs.complete_run(staging, {"k": 2, "fingerprint": "fp", "config": config})
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
