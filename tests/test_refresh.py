"""The refresh flow on a real trained run: nothing published for an unchanged catalog; added,
removed, replaced and re-described products answered right without retraining; hidden
products kept hidden; removal winning a race; drift making the next nightly retrain; and
nightly after refreshes giving the run nightly alone gives."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.configs import write_config
from tests.imagefactory import shopper_copy
from vasrch.catalog.demo import generate_demo_catalog
from vasrch.catalog.images import IMAGE_EXTENSIONS, decode_image
from vasrch.config import load_config
from vasrch.index.search_index import load_index
from vasrch.layout import RunLayout
from vasrch.workspace import runs
from vasrch.workspace.hidden import read_hidden
from vasrch.workspace.promotion import warm_start

REMOVED = ("hat_001", "mug_002")
ADDED = ("new_hat", "new_watch")
# Differ between two shops by construction: each copy's file facts, and the status of a photo
# against the run before (new photos are "unchanged" after a refresh already indexed them).
NOT_COMPARED = ["path", "mtime_ns", "ctime_ns", "inode", "device", "status"]


def _manifest(catalog: Path) -> pd.DataFrame:
    photos = sorted(
        p.relative_to(catalog).as_posix()
        for p in catalog.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    return pd.DataFrame(
        {
            "product_id": [Path(p).stem for p in photos],
            "image": photos,
            "title": [f"{Path(p).stem} title" for p in photos],
            "price": [f"{10 + i}" for i in range(len(photos))],
            "category": [Path(p).parent.name for p in photos],
        }
    )


def _shop(root: Path, demo_catalog: Path, **refresh) -> Path:
    """A catalog (a copy of the demo one) with a product manifest, and its config."""
    catalog = root / "catalog"
    shutil.copytree(demo_catalog, catalog)
    _manifest(catalog).to_csv(root / "products.csv", index=False)
    return write_config(
        root,
        {
            "catalog": {"path": str(catalog), "manifest": "products.csv"},
            "workspace": "ws",
            "features": {"shard_size": 16},
            "clustering": {"diagnostics": {"k_min": 2, "k_max": 8, "k_step": 2}},
            "evaluation": {"sample": 48},
            "bulk": {"enabled": True, "top_n": 5},
            "refresh": refresh,
        },
    )


def _edit_catalog(root: Path) -> dict[str, Path]:
    """Remove two products, add two new ones, reprice one and retitle another; the new
    products' photos by product id."""
    catalog = root / "catalog"
    table = pd.read_csv(root / "products.csv", dtype=str)
    for product in REMOVED:
        (catalog / table.loc[table["product_id"] == product, "image"].iloc[0]).unlink()
    table = table[~table["product_id"].isin(REMOVED)]
    fresh = root / "fresh"
    generate_demo_catalog(fresh, per_class=1, seed=11)
    photos = {}
    for product, source in zip(ADDED, ("hat/hat_000.png", "watch/watch_000.png"), strict=True):
        photos[product] = catalog / "new" / f"{product}.png"
        photos[product].parent.mkdir(exist_ok=True)
        shutil.copy(fresh / source, photos[product])
    added = pd.DataFrame(
        {
            "product_id": list(ADDED),
            "image": [f"new/{p}.png" for p in ADDED],
            "title": ["New hat", "New watch"],
            "price": ["99", "98"],
            "category": ["hat", "watch"],
        }
    )
    table = pd.concat([table, added], ignore_index=True)
    table.loc[table["product_id"] == "bag_000", "price"] = "1"
    table.loc[table["product_id"] == "shoe_003", "title"] = "Sneaker (reseller) #1251"
    table.to_csv(root / "products.csv", index=False)
    return photos


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path):
    """A shop trained once, refreshed unchanged, then edited and refreshed again."""
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow

    root = tmp_path_factory.mktemp("refresh")
    config = _shop(root, demo_catalog)
    trained = train_flow(str(config))
    unchanged = refresh_flow(str(config))
    photos = _edit_catalog(root)
    result = refresh_flow(str(config))
    return config, trained, unchanged, result, photos


def test_an_unchanged_catalog_publishes_nothing(refreshed) -> None:
    _, trained, unchanged, _, _ = refreshed
    assert not unchanged.published and unchanged.changes.empty
    assert unchanged.parent_run == trained.run_id
    assert unchanged.extract.new == 0  # nothing embedded again


def test_a_refresh_publishes_the_changes_as_a_child_run(refreshed) -> None:
    config, trained, _, result, _ = refreshed
    manifest = result.manifest
    workspace = load_config(config).workspace
    assert runs.latest_run_id(workspace) == manifest.run_id != trained.run_id
    assert manifest.lineage.parent_run == trained.run_id
    refresh = manifest.refresh
    assert refresh.trained_run == trained.run_id
    assert (refresh.added, refresh.removed, refresh.replaced, refresh.changed) == (2, 2, 0, 2)
    assert (refresh.products_added, refresh.products_removed) == (2, 2)
    assert manifest.k == trained.manifest.k
    assert manifest.calibration == trained.manifest.calibration
    assert result.extract.new == 2  # only the new photos were embedded
    runs.read_manifest(result.run_dir, verify=True)  # hashed like every run
    parent = load_index(trained.run_dir / "index")
    child = load_index(result.run_dir / "index")
    np.testing.assert_array_equal(child.centroids, parent.centroids)
    assert child.n == parent.n


def test_after_a_refresh_answers_hold_new_products_not_removed_ones_and_new_metadata(
    refreshed, tmp_path: Path
) -> None:
    from vasrch.search.searcher import open_run

    config, _, _, result, photos = refreshed
    searcher = open_run(load_config(config).workspace)
    assert searcher.run_id == result.manifest.run_id
    for product, photo in photos.items():
        query = tmp_path / f"{product}.png"
        query.write_bytes(shopper_copy(photo))
        pixels = decode_image(query, searcher.spec.input_size).pixels
        vectors = searcher.backbone(batch_size=1).embed(pixels[None])
        table = searcher.to_table(searcher.search_vectors(vectors, top_n=10), [product])
        assert table["product_id"].iloc[0] == product
    everyone = searcher.search_vectors(searcher.index.vectors, top_n=10)
    answered = set(searcher.products.of(everyone.ids[everyone.ids != ""]))
    assert answered.isdisjoint(REMOVED) and set(ADDED) <= answered
    assert searcher.products.describe(["bag/bag_000.png"])["price"].iloc[0] == 1  # a number column
    retitled = searcher.products.describe(["shoe/shoe_003.png"])["title"].iloc[0]
    assert retitled == "Sneaker (reseller) #1251"
    bulk = pd.concat(pd.read_parquet(p) for p in RunLayout(result.run_dir).bulk.neighbour_shards())
    removed_photos = {"hat/hat_001.jpg", "mug/mug_002.jpg"}
    added_photos = {f"new/{p}.png" for p in ADDED}
    assert set(bulk["neighbour_id"]).isdisjoint(removed_photos)
    assert set(bulk["image_id"]).isdisjoint(removed_photos)
    assert added_photos <= set(bulk["image_id"]) and added_photos <= set(bulk["neighbour_id"])


def test_hidden_products_stay_hidden_until_the_catalog_drops_them(
    tmp_path: Path, demo_catalog: Path
) -> None:
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow

    config = _shop(tmp_path, demo_catalog)
    train_flow(str(config))
    workspace = load_config(config).workspace
    cli = [sys.executable, "-m", "vasrch.cli", "products"]
    done = subprocess.run(
        [*cli, "hide", str(config), "bag_001", "watch_004"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert read_hidden(workspace).ids == {"bag_001", "watch_004"}
    # the catalog drops watch_004 itself: the next refresh forgets it, bag_001 stays hidden
    table = pd.read_csv(tmp_path / "products.csv", dtype=str)
    table[table["product_id"] != "watch_004"].to_csv(tmp_path / "products.csv", index=False)
    result = refresh_flow(str(config))
    assert result.published and result.changes.products_removed == ("watch_004",)
    assert read_hidden(workspace).ids == {"bag_001"}
    listed = subprocess.run([*cli, "hidden", str(config)], capture_output=True, text=True)
    assert "bag_001" in listed.stdout and "watch_004" not in listed.stdout


def test_drift_past_a_threshold_makes_the_next_nightly_start_cold(
    tmp_path: Path, demo_catalog: Path
) -> None:
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow

    config = _shop(tmp_path, demo_catalog, max_added_share=0.01)
    train_flow(str(config))
    _edit_catalog(tmp_path)
    result = refresh_flow(str(config))
    drift = result.manifest.refresh.drift
    assert drift.retrain_due and "added since training" in drift.reasons[0]
    cfg = load_config(config)
    start = warm_start(cfg.workspace, result.manifest.fingerprint, cfg.clustering, True)
    assert start.centroids is None and "found a retrain due" in start.problem


def test_removal_wins_a_race_with_the_refresh(tmp_path: Path, demo_catalog: Path) -> None:
    """A photo the refresh scanned, then removed before it publishes, is not published."""
    from prefect import flow

    from vasrch.orchestration.flows import refresh as refresh_module
    from vasrch.orchestration.flows.train import train_flow

    config = _shop(tmp_path, demo_catalog)
    train_flow(str(config))
    cfg = load_config(config)
    late = tmp_path / "catalog" / "tshirt" / "tshirt_002.jpg"

    @flow
    def refresh_with_a_late_removal():
        original = refresh_module._build

        def build_after_removal(*args, **kwargs):
            late.unlink()  # removed after the scan, while the refresh builds
            return original(*args, **kwargs)

        refresh_module._build = build_after_removal
        try:
            table = pd.read_csv(tmp_path / "products.csv", dtype=str)
            table.loc[0, "title"] = "retitled"  # a change, so the refresh publishes
            table.to_csv(tmp_path / "products.csv", index=False)
            return refresh_module.refresh_stage(cfg)
        finally:
            refresh_module._build = original

    result = refresh_with_a_late_removal()
    assert result.published
    index = load_index(result.run_dir / "index")
    assert "tshirt/tshirt_002.jpg" not in set(index.ids)
    catalog = pd.read_parquet(RunLayout(result.run_dir).catalog)
    assert "tshirt/tshirt_002.jpg" not in set(catalog["image_id"])


@pytest.mark.slow  # long: run with -m slow
def test_nightly_after_refreshes_gives_the_run_nightly_alone_gives(
    tmp_path: Path, demo_catalog: Path
) -> None:
    """Two shops with the same catalog and the same edits, one refreshed before its nightly:
    both nightlies index the same photos in the same clusters with the same products."""
    from vasrch.orchestration.flows.nightly import nightly_flow
    from vasrch.orchestration.flows.refresh import refresh_flow
    from vasrch.orchestration.flows.train import train_flow

    nightly = {}
    for shop, refreshes in (("refreshed", 2), ("alone", 0)):
        root = tmp_path / shop
        root.mkdir()
        config = _shop(root, demo_catalog, max_added_share=1.0, max_size_spread_growth=100.0)
        train_flow(str(config))
        _edit_catalog(root)
        for _ in range(refreshes):
            refresh_flow(str(config))
        result = nightly_flow(str(config))
        assert result.warm_start
        nightly[shop] = RunLayout(result.train.run_dir)
    refreshed, alone = nightly["refreshed"], nightly["alone"]
    np.testing.assert_allclose(
        np.load(refreshed.index.centroids), np.load(alone.index.centroids), atol=1e-5
    )
    for same, other in (
        (refreshed.index.assignments, alone.index.assignments),
        (refreshed.catalog, alone.catalog),
    ):
        same, other = (
            pd.read_parquet(p).drop(columns=NOT_COMPARED, errors="ignore") for p in (same, other)
        )
        pd.testing.assert_frame_equal(same, other)
