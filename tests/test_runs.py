import os
import time
from pathlib import Path

import pytest

from vasrch import runs


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


def test_prune_keeps_newest_and_latest_and_live_staging(tmp_path: Path) -> None:
    ids = [_run(tmp_path, str(i)) for i in range(5)]
    runs.set_latest(tmp_path, ids[0])
    live = runs.start_run(tmp_path, runs.new_run_id())
    stale = runs.start_run(tmp_path, runs.new_run_id())
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    removed = runs.prune_runs(tmp_path, keep_last=2)
    left = [r["run_id"] for r in runs.list_runs(tmp_path)]
    assert left == [ids[0], ids[3], ids[4]]
    assert set(removed) == {ids[1], ids[2], stale.name}
    assert live.is_dir() and not stale.exists()
    assert runs.latest_run_id(tmp_path) == ids[0]
