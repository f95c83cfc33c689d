"""Figures on photos the index has not seen, and the vectors steps that lift them (issue 9)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.configs import write_config
from tests.imagefactory import product_shots
from tests.run_records import run_record
from vasrch.config import ClusteringConfig, EvaluationConfig, GatesConfig, SearchConfig
from vasrch.index.clustering import fit_centring, l2_normalise
from vasrch.index.figures import Figures
from vasrch.index.search_index import augment_database, build_index, load_index, save
from vasrch.index.training import HeldOut, evaluate_index, fit_index
from vasrch.workspace.promotion import gate_failure
from vasrch.workspace.run_manifest import Metrics


def _blobs(n: int = 1200, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, d))[rng.integers(0, 40, n)] + rng.normal(scale=0.8, size=(n, d))
    return np.array([f"i{i:05d}" for i in range(n)], dtype=object), l2_normalise(x + 2.0)


def test_centring_subtracts_the_mean_and_survives_save_and_load(tmp_path):
    ids, x = _blobs()
    projection = fit_centring(x)
    np.testing.assert_allclose(projection.mean, x.mean(axis=0), atol=1e-6)
    index = build_index(ids, x, x[:4], np.arange(len(x)) % 4, "fp", projection)
    loaded = load_index(save(index, tmp_path / "index"))
    q = x[:3]
    expected = l2_normalise(q - x.mean(axis=0))
    np.testing.assert_allclose(loaded.prepare_queries(q), expected, atol=1e-5)


def test_query_expansion_searches_again_with_the_weighted_results(tmp_path):
    ids, x = _blobs()
    plain = build_index(ids, x, x[:1], np.zeros(len(x), dtype=int), "fp")
    expanded = build_index(
        ids, x, x[:1], np.zeros(len(x), dtype=int), "fp", expansion=2, expansion_alpha=3.0
    )
    q = l2_normalise(x[:5] + 0.01)
    first = plain.search(q, 2)
    rows = plain.rows_of(first.ids.ravel()).reshape(first.ids.shape)
    weights = np.maximum(first.scores, 0) ** 3.0
    by_hand = l2_normalise(q + np.einsum("qm,qmd->qd", weights, plain.vectors[rows]))
    got = expanded.search(q, 10)
    assert got.ids.tolist() == plain.search(by_hand, 10).ids.tolist()
    assert load_index(save(expanded, tmp_path / "index")).expansion == 2


def test_database_augmentation_adds_each_vectors_weighted_neighbours():
    ids, x = _blobs(300)
    index = build_index(ids, x, x[:1], np.zeros(len(x), dtype=int), "fp")
    augmented = augment_database(index, neighbours=3, alpha=3.0)
    sims = index.vectors @ index.vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :3]
    weights = np.take_along_axis(sims, top, axis=1) ** 3.0
    by_hand = l2_normalise(index.vectors + np.einsum("qm,qmd->qd", weights, index.vectors[top]))
    np.testing.assert_allclose(augmented.vectors, by_hand, atol=1e-5)
    assert augmented.ids.tolist() == index.ids.tolist()


def test_gates_read_held_out_figures_when_there_are_some():
    metrics = Metrics(
        leave_one_out=Figures(queries=48, recall_at_10=0.99, precision_at_10=0.9),
        held_out=Figures(queries=24, recall_at_10=0.8, precision_at_10=0.5),
    )
    manifest = run_record(metrics=metrics)
    auto = gate_failure(GatesConfig(min_recall_at_10=0.9, min_precision_at_10=0.6), manifest)
    assert "held_out_recall_at_10 0.8000" in auto and "held_out_precision_at_10 0.5000" in auto
    loo = GatesConfig(figures="leave_one_out", min_recall_at_10=0.9, min_precision_at_10=0.6)
    assert gate_failure(loo, manifest) is None
    without = run_record(metrics=metrics.model_copy(update={"held_out": None}))
    assert "no held-out figures" in gate_failure(GatesConfig(figures="held_out"), without)


def test_train_flow_reports_held_out_beside_leave_one_out(tmp_path, demo_catalog):
    from vasrch.catalog.demo import generate_demo_catalog
    from vasrch.orchestration.flows.train import train_flow

    queries = tmp_path / "queries"
    generate_demo_catalog(queries, per_class=3, seed=7)
    copied = next(demo_catalog.rglob("*.jpg"))
    shutil.copy(copied, queries / copied.parent.name / "copy-of-a-catalog-photo.jpg")
    config = write_config(
        tmp_path,
        {
            "catalog": {"path": str(demo_catalog)},
            "workspace": "ws",
            "clustering": {"num_clusters": 6, "diagnostics": {"k_min": 4, "k_max": 8}},
            "evaluation": {"sample": 48, "queries": "queries"},
            "bulk": {"enabled": False},
        },
    )
    with pytest.warns(UserWarning, match="1 held-out photos are byte-for-byte in the catalog"):
        result = train_flow(str(config))
    metrics = result.manifest.metrics
    assert metrics.held_out.queries == 24  # 8 classes x 3; the copy is left out
    assert metrics.leave_one_out.queries == 48
    assert metrics.held_out.recall_at_10 >= 0.9 and metrics.held_out.precision_at_10 > 0.5
    assert result.manifest.calibration.calibrated_on == "24 held-out photos"
    run = result.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["calibration"]["calibrated_on"] == "24 held-out photos"
    held_out = manifest["metrics"]["held_out"]
    assert held_out["precision_at_10"] == metrics.held_out.precision_at_10
    page = (run / "report.html").read_text()
    assert "precision@10 (held-out)" in page and "Probes calibrated on 24 held-out photos" in page


@pytest.mark.slow  # long: run with -m slow
@pytest.mark.realdata
def test_calibration_without_held_out_photos_holds_for_new_photos(dataset, tmp_path):
    """A catalog where each product has four shots: its catalog photos as queries find sibling
    shots in their own cluster, so calibrating on them alone picks too few probes for photos of
    new products. With the near photos left out the calibrated probes reach the target on the
    held-out photos (clothing-small's test photos, classes as products' kinds)."""
    from vasrch.catalog.scan import scan_catalog
    from vasrch.features.backbones import BackboneSpec, load_backbone
    from vasrch.features.extraction import extract_chunk, load_vectors, plan_chunks
    from vasrch.index.training import catalog_labels

    rng = np.random.default_rng(0)
    catalog, new = tmp_path / "catalog", tmp_path / "new"
    for class_dir in sorted((dataset / "train").iterdir()):
        (catalog / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.glob("*.jpg"))[:12]:
            for j, shot in enumerate(product_shots(Image.open(photo).convert("RGB"), rng)):
                shot.save(catalog / class_dir.name / f"{photo.stem}-{j}.jpg", quality=90)
        shutil.copytree(dataset / "test" / class_dir.name, new / class_dir.name)
    backbone, cache = load_backbone(BackboneSpec()), tmp_path / "cache"
    embedded = []
    for folder in (catalog, new):
        table = scan_catalog(folder).table
        for rows in plan_chunks(table, cache, 256):
            extract_chunk(rows, backbone, cache)
        embedded.append((table, *load_vectors(cache, table)))
    (table, ids, vectors), (new_table, new_ids, new_vectors) = embedded
    labels = catalog_labels(table)
    held_out = HeldOut(new_ids, new_vectors, catalog_labels(new_table))
    search = SearchConfig(max_probes=24)
    index, _ = fit_index(ids, vectors, 24, backbone.fingerprint, ClusteringConfig(), None, search)

    def calibrated(similarity: float) -> int:
        evaluation = EvaluationConfig(same_product_similarity=similarity)
        return evaluate_index(index, ids, vectors, labels, search, evaluation).probes

    def new_photo_recall(probes: int) -> float:
        fixed = search.model_copy(update={"probes": probes})
        figures = evaluate_index(index, ids, vectors, labels, fixed, EvaluationConfig(), held_out)
        return figures.held_out.recall_at_10

    naive, default = calibrated(1.0), calibrated(EvaluationConfig().same_product_similarity)
    assert naive < default
    assert new_photo_recall(default) >= search.target_recall
    assert new_photo_recall(naive) < new_photo_recall(default)
