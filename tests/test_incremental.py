"""An index refreshed without retraining: new photos on the trained clusters, removed ones
gone, the run's retrieval steps applied as training applies them, and drift measured."""

from __future__ import annotations

import numpy as np
import pytest

from vasrch.config import ClusteringConfig, EvaluationConfig, RefreshConfig, SearchConfig
from vasrch.index.clustering import l2_normalise
from vasrch.index.incremental import assign, measure_drift, refresh_index, size_spread
from vasrch.index.training import fit_index, recheck_recall


def vectors(n: int, dim: int = 48, centres: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(centres, dim)) * 2
    return l2_normalise(means[rng.integers(centres, size=n)] + rng.normal(size=(n, dim)))


def ids_of(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}-{i:05d}" for i in range(n)], dtype=object)


@pytest.mark.parametrize("augmentation", [0, 3])
def test_refreshing_the_same_photos_gives_the_trained_index(augmentation: int) -> None:
    ids, x = ids_of("a", 1500), vectors(1500)
    search = SearchConfig(database_augmentation=augmentation)
    cfg = ClusteringConfig(n_components=16)
    parent, _ = fit_index(ids, x, 12, "fp", cfg, search=search)
    again = refresh_index(parent, ids, x, search)
    assert np.array_equal(again.ids, parent.ids)
    assert np.array_equal(again.offsets, parent.offsets)
    np.testing.assert_allclose(again.vectors, parent.vectors, atol=1e-6)


def test_new_photos_join_the_cluster_kmeans_would_give_and_removed_ones_leave() -> None:
    ids, x = ids_of("a", 1500), vectors(1500)
    search = SearchConfig(database_augmentation=0)
    parent, model = fit_index(ids, x, 12, "fp", ClusteringConfig(n_components=16), search=search)
    added_ids, added = ids_of("new", 200), vectors(200, seed=5)
    keep = np.arange(100, 1500)
    new_ids = np.concatenate([ids[keep], added_ids])
    refreshed = refresh_index(parent, new_ids, np.vstack([x[keep], added]), search)

    assert set(refreshed.ids) == set(new_ids) and refreshed.n == len(new_ids)
    label_of = dict(zip(refreshed.ids, refreshed.labels, strict=True))
    parent_label = dict(zip(parent.ids, parent.labels, strict=True))
    assert all(label_of[i] == parent_label[i] for i in ids[keep])
    expected = model.predict(parent.projection.transform(added))
    assert [label_of[i] for i in added_ids] == expected.tolist()
    assert np.array_equal(assign(parent, added), expected)
    # a new photo is found first by its own vector
    result = refreshed.search(added[:20], top_n=1, probes=1)
    assert result.ids[:, 0].tolist() == added_ids[:20].tolist()
    assert np.array_equal(refreshed.centroids, parent.centroids)


def test_drift_reasons_name_each_threshold_passed() -> None:
    limits = RefreshConfig(max_added_share=0.2, max_size_spread_growth=1.5, recall_margin=0.02)
    fine = measure_drift(10, 1000, 0.5, 0.45, 0.95, 0.95, limits)
    assert not fine.retrain_due and fine.added_share == pytest.approx(0.01)
    drifted = measure_drift(300, 1000, 0.9, 0.5, 0.90, 0.95, limits)
    assert drifted.retrain_due and len(drifted.reasons) == 3
    assert "30% of the photos were added since training" in drifted.reasons[0]
    assert "1.80x" in drifted.reasons[1]
    assert "recall@10 re-checked at 0.900, below 0.930" in drifted.reasons[2]


def test_photos_unlike_the_training_raise_size_spread_and_lower_rechecked_recall() -> None:
    ids, x = ids_of("a", 1500), vectors(1500)
    search = SearchConfig(database_augmentation=0)
    parent, _ = fit_index(ids, x, 12, "fp", ClusteringConfig(), search=search)
    evaluation = EvaluationConfig()
    assert recheck_recall(parent, ids, x, 1, evaluation, 300) > 0.95
    # photos piled in one unseen direction crowd a few clusters
    rng = np.random.default_rng(3)
    piled = l2_normalise(rng.normal(size=48) * 3 + rng.normal(size=(1500, 48)))
    piled_ids = np.concatenate([ids, ids_of("pile", 1500)])
    crowded = refresh_index(parent, piled_ids, np.vstack([x, piled]), search)
    assert size_spread(crowded) > 5 * size_spread(parent)
    # structureless photos have neighbours in every cluster: one probe no longer finds them
    noise = l2_normalise(rng.normal(size=(3000, 48)))
    noisy_ids = np.concatenate([ids, ids_of("noise", 3000)])
    noisy = refresh_index(parent, noisy_ids, np.vstack([x, noise]), search)
    assert recheck_recall(noisy, noisy_ids, np.vstack([x, noise]), 1, evaluation, 300) < 0.7
