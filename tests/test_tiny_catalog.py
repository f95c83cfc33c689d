"""Catalogs of 2 to 5 images train, publish and answer queries; top_n never exceeds the index."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.configs import write_config
from tests.imagefactory import picture
from vasrch.orchestration.flows.train import train_flow
from vasrch.search.searcher import open_run


def _catalog(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(n)
    for i in range(n):
        path = folder / f"class{i % 2}" / f"item{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture(rng).save(path)
    return folder


def _config(root: Path, n: int, **clustering) -> Path:
    config = {
        "catalog": {"path": str(_catalog(root / "catalog", n))},
        "workspace": str(root / "workspace"),
        "features": {"weights": "none", "image_size": 32},
        "clustering": clustering,
    }
    return write_config(root, config)


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    config = _config(tmp_path_factory.mktemp("three"), 3)
    return config, train_flow(str(config))


def test_three_images_with_auto_k_make_one_exact_cluster(three) -> None:
    _, result = three
    manifest = result.manifest
    assert manifest.promoted, manifest.reason
    assert (manifest.suggested_k, manifest.k) == (1, 1)
    assert "too few to sweep k" in manifest.sweep_note
    assert manifest.calibration.recall_at_10 == 1.0
    searcher = open_run(result.run_dir.parents[1])
    found = searcher.search_ids(list(searcher.index.ids), top_n=10)
    assert found.ids.shape == (3, 3) and (found.ids[:, :2] != "").all()


def test_two_images_with_two_clusters_skip_the_sweep(tmp_path: Path) -> None:
    result = train_flow(str(_config(tmp_path, 2, num_clusters=2)))
    assert result.manifest.promoted and result.manifest.k == 2
    assert result.manifest.counts.indexed == 2


def test_cli_query_with_a_huge_top_n_answers_at_most_the_catalog(three, capsys) -> None:
    from vasrch.cli import main

    config, _ = three
    query = next((config.parent / "catalog").rglob("*.jpg"))
    command = ["query", str(query), "-c", str(config), "--top-n", "1000000000", "--format", "json"]
    start = time.perf_counter()
    assert main(command) == 0
    rows = json.loads(capsys.readouterr().out)
    # the query is one of the 3 catalog photos: its own product is left out
    assert [r["rank"] for r in rows] == [1, 2]
    assert time.perf_counter() - start < 120


def test_a_tampered_latest_catalog_is_not_trusted(three, tmp_path: Path) -> None:
    config, result = three
    shutil.copytree(config.parent, tmp_path, dirs_exist_ok=True)
    copy = yaml.safe_load(config.read_text())
    copy["catalog"]["path"] = str(tmp_path / "catalog")
    copy["workspace"] = str(tmp_path / "workspace")
    write_config(tmp_path, copy)
    latest = tmp_path / "workspace" / "runs" / result.run_id / "catalog.parquet"
    table = pd.read_parquet(latest)
    table.assign(sha256="f" * 64).to_parquet(latest)  # would make every image "changed"
    again = train_flow(str(tmp_path / "config.yaml"))
    assert again.manifest.promoted and again.manifest.counts.new == 3  # previous catalog ignored
    assert again.manifest.counts.changed == 0
