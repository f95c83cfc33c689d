"""The train flow end to end on a generated catalog, through Prefect's temporary local API: the
run of the shared `small_run` fixture (conftest.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.configs import SMALL_RUN_BULK, small_run_config, write_config
from vasrch.index.search_index import brute_force
from vasrch.search.searcher import open_run
from vasrch.workspace import runs


def test_run_folder_complete_and_latest(small_run) -> None:
    _, result = small_run
    run_dir = result.run_dir
    ws = run_dir.parents[1]
    assert runs.latest_run_id(ws) == run_dir.name == result.run_id
    for rel in [
        "config.yaml",
        "catalog.parquet",
        "diagnostics/sweep.parquet",
        "diagnostics/elbow_silhouette.png",
        "index/centroids.npy",
        "index/assignments.parquet",
        "model.joblib",
        "bulk/duplicates.parquet",
    ]:
        assert (run_dir / rel).is_file(), rel
    manifest = runs.read_manifest(run_dir)
    assert manifest == result.manifest
    assert manifest.counts.indexed == 48 and manifest.lineage.parent_run is None
    assert set(manifest.artifacts) >= {"model.joblib", "index/vectors.npy"}
    assert manifest.timings.bulk_s is not None and manifest.timings.extract_s > 0
    sweep = pd.read_parquet(run_dir / "diagnostics" / "sweep.parquet")
    assert list(sweep["k"]) == list(range(2, 13))
    assert manifest.suggested_k in set(sweep["k"])
    assert (run_dir / "diagnostics" / "elbow_silhouette.png").read_bytes()[:4] == b"\x89PNG"


def test_quality_on_demo_classes(small_run) -> None:
    _, result = small_run
    loo = result.manifest.metrics.leave_one_out
    assert result.manifest.calibration.recall_at_10 >= 0.9 and loo.recall_at_10 >= 0.9
    assert loo.precision_at_5 >= 0.8
    gap = loo.precision_at_10 - loo.exact_precision_at_10
    assert abs(gap) <= 0.05


def test_model_joblib_is_fitted_kmeans(small_run) -> None:
    _, result = small_run
    model = joblib.load(result.run_dir / "model.joblib")
    assert model.cluster_centers_.shape == (result.manifest.k, 1280)


def test_bulk_neighbours_exclude_self_and_rank(small_run) -> None:
    _, result = small_run
    bulk = result.run_dir / "bulk"
    table = pd.concat(pd.read_parquet(p) for p in sorted(bulk.glob("neighbours-*.parquet")))
    assert (table["image_id"] != table["neighbour_id"]).all()
    assert table.groupby("image_id")["rank"].max().max() == SMALL_RUN_BULK["top_n"]
    assert table["image_id"].nunique() == 48


def test_query_search_equals_brute_force_with_all_probes(small_run) -> None:
    _, result = small_run
    searcher = open_run(result.run_dir.parents[1])
    idx = searcher.index
    queries = np.asarray(idx.vectors[:5])
    got = searcher.search_vectors(queries, 10, probes=idx.k)
    exact = idx.exact().search(queries, 10)
    assert (got.ids == exact.ids).all()
    plain = brute_force(idx.prepare_queries(queries), idx.ids, idx.vectors, 10, None, idx.expansion)
    assert (got.ids == plain.ids).all()


def test_tampered_artifact_fails_to_load(small_run, tmp_path: Path) -> None:
    import shutil

    _, result = small_run
    copy = tmp_path / "ws" / "runs" / result.run_id
    shutil.copytree(result.run_dir, copy)
    runs.set_latest(tmp_path / "ws", result.run_id)
    open_run(tmp_path / "ws")
    with open(copy / "index" / "centroids.npy", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x3f")
    with pytest.raises(runs.RunError, match=r"centroids\.npy does not match its sha256"):
        open_run(tmp_path / "ws")


def _cli_query(path: str, cfg: Path, *extra: str) -> list[dict]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vasrch.cli",
            "query",
            path,
            "-c",
            str(cfg),
            "--format",
            "json",
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


@pytest.mark.slow  # a CLI train and query in subprocesses: about 30 s
def test_cli_query_json_names_products_and_leaves_out_the_query_photo(
    small_run, tmp_path: Path
) -> None:
    cfg, result = small_run
    searcher = open_run(result.run_dir.parents[1])
    image_id = searcher.index.ids[0]
    copy = tmp_path / "renamed-copy.png"
    copy.write_bytes(Path(searcher.path_of([image_id])[0]).read_bytes())
    rows = _cli_query(str(copy), cfg, "--top-n", "3")
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert list(rows[0]) == ["query", "rank", "product_id", "score", "image_id", "category"]
    # the same bytes as a catalog photo: that photo's product is not its own answer
    assert image_id not in [r["product_id"] for r in rows]
    assert rows[0]["category"] == image_id.split("/")[0]
    with_paths = _cli_query(str(copy), cfg, "--top-n", "3", "--show-paths")
    assert [Path(r["path"]).name for r in with_paths] == [Path(r["image_id"]).name for r in rows]
    # a query that is not a catalog photo keeps every product: a slightly changed copy finds it
    from PIL import Image

    edited = tmp_path / "edited.png"
    Image.open(copy).convert("RGB").resize((70, 70)).save(edited)
    assert _cli_query(str(edited), cfg, "--top-n", "3")[0]["product_id"] == image_id


@pytest.mark.slow  # a train killed with SIGKILL and rerun: about 21 s
def test_killed_train_leaves_latest_on_previous_run(
    small_run, tmp_path: Path, demo_catalog
) -> None:
    import shutil

    _, result = small_run
    ws = tmp_path / "ws"
    shutil.copytree(result.run_dir.parents[1], ws)
    before = runs.latest_run_id(ws)
    slow_sweep = {"diagnostics": {"k_min": 2, "k_max": 40, "k_step": 1}}
    config = write_config(tmp_path, small_run_config(demo_catalog, clustering=slow_sweep))
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vasrch.cli", "run", str(config), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the kill then reaches the Prefect server it starts
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if list((ws / "runs").glob(".staging-*/diagnostics")):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.latest_run_id(ws) == before
    assert [r["run_id"] for r in runs.list_runs(ws)] == [before]
    open_run(ws)
