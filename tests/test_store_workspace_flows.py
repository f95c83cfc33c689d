"""Flows on a workspace in object storage (SeaweedFS on loopback): two machines (two cache
folders) train in turn; the second reuses the first's feature shards and follows its run; a
product hidden on one machine is left out of the other's query job, whose page lands on the
store; the CLI and the nightly flow prune the store's runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.configs import write_config
from tests.imagefactory import picture
from vasrch.cli import main
from vasrch.orchestration.flows.nightly import nightly_flow
from vasrch.orchestration.flows.products import hide_products_flow
from vasrch.orchestration.flows.query import query_flow
from vasrch.orchestration.flows.refresh import refresh_flow
from vasrch.orchestration.flows.train import train_flow
from vasrch.search.searcher import open_run
from vasrch.workspace.remote_prune import store_runs
from vasrch.workspace.remote_runs import read_latest, run_key

PHOTOS = 6


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("catalog")
    rng = np.random.default_rng(25)
    for i in range(PHOTOS):
        path = folder / f"class{i % 2}" / f"item{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture(rng).save(path)
    return folder


def machine_config(root: Path, catalog: Path, store, cache: str) -> Path:
    """The config one machine runs: the store store as workspace, its own cache folder."""
    return write_config(
        root,
        {
            "catalog": {"path": str(catalog)},
            "workspace": store.url,
            "workspace_cache": cache,
            "workspace_storage_options": dict(store.storage_options),
            "features": {"weights": "none", "image_size": 32},
            "clustering": {"num_clusters": 2, "diagnostics": {"k_max": 3}},
            "bulk": {"enabled": False},
        },
        name=f"{cache}.yaml",
    )


@pytest.mark.slow  # six flows: about 180 s on 2 busy cores
def test_a_second_machine_reuses_the_store_and_publishes_after_the_first(store, catalog, tmp_path):
    first = train_flow(str(machine_config(tmp_path, catalog, store, "machine-a")))
    assert first.manifest.counts.extracted_new == PHOTOS
    assert read_latest(store).run_id == first.run_id
    assert store.get(run_key(first.run_id, "manifest.json")) is not None
    assert any(k.endswith(".parquet") for k in store.keys("features"))

    second = train_flow(str(machine_config(tmp_path, catalog, store, "machine-b")))
    assert second.run_dir.parents[1] == tmp_path / "machine-b"
    assert second.manifest.counts.extracted_new == 0
    assert second.manifest.counts.reused == PHOTOS
    assert second.manifest.lineage.parent_run == first.run_id
    assert read_latest(store).run_id == second.run_id

    # machine A's stale cache follows the store when it next writes: its refresh starts from
    # B's run and publishes after it
    picture(np.random.default_rng(7)).save(catalog / "class0" / "added.jpg")
    refreshed = refresh_flow(str(machine_config(tmp_path, catalog, store, "machine-a")))
    assert refreshed.parent_run == second.run_id and refreshed.published
    assert read_latest(store).run_id == refreshed.manifest.run_id
    assert refreshed.extract.new == 1
    assert len(open_run(tmp_path / "machine-a").index.ids) == PHOTOS + 1

    # machine A hides a product on the store; machine B's query job, read through the store,
    # leaves it out, and its page is on the store for any machine to open
    config_b = str(machine_config(tmp_path, catalog, store, "machine-b"))
    products = pd.read_parquet(refreshed.run_dir / "catalog.parquet").set_index("image_id")
    hidden = str(products.loc["class0/item2.jpg", "product_id"])
    machine_a = str(machine_config(tmp_path, catalog, store, "machine-a"))
    assert hide_products_flow(machine_a, [hidden]) == [hidden]
    job = query_flow(config_b, [str(catalog / "class0" / "item0.jpg")])
    assert job.run_id == refreshed.manifest.run_id
    answered = pd.read_parquet(job.out_dir / "results.parquet")
    assert hidden not in set(answered["product_id"]) and len(answered) > 0
    page_key = job.stored_page.removeprefix(store.url + "/")
    assert store.get(page_key) == (job.out_dir / "results.html").read_bytes()

    # the CLI prunes the store to LATEST's run alone, holding the lease
    assert main(["runs", "prune", config_b, "--keep", "1"]) == 0
    assert set(store_runs(store)) == {refreshed.manifest.run_id}
    assert store.get(run_key(first.run_id, "manifest.json")) is None

    # a nightly keeping one run publishes its run and names the run it pruned from the store
    gates = {"nightly.gates.min_recall_at_10": 0.0, "nightly.gates.max_rejected_fraction": 1.0}
    nightly = nightly_flow(config_b, {"runs.keep_last": 1, **gates})
    assert nightly.train.manifest.promoted
    assert nightly.pruned == (refreshed.manifest.run_id,)
    assert set(store_runs(store)) == {nightly.train.run_id}
