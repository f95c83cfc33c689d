import numpy as np
import pandas as pd
import pytest

from vasrch.config import ClusteringConfig, DiagnosticsConfig, EvaluationConfig, SearchConfig
from vasrch.index.training import (
    HeldOut,
    catalog_labels,
    choose_k,
    evaluate_index,
    fit_index,
    sweep_values,
)


def _mixture(n: int = 3000, d: int = 32, centres: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d))
    x = means[rng.integers(0, centres, n)] + rng.normal(scale=0.9, size=(n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return np.array([f"img{i:05d}.jpg" for i in range(n)], dtype=object), x


def _evaluate(index, ids, x, probes, target=0.95, max_probes=32, **evaluation):
    search = SearchConfig(probes=probes, target_recall=target, max_probes=max_probes)
    config = EvaluationConfig(sample=300, **evaluation)
    return evaluate_index(index, ids, x, None, search, config)


def test_auto_probes_are_the_fewest_reaching_the_target() -> None:
    ids, x = _mixture()
    plain = SearchConfig(database_augmentation=0, query_expansion=0)
    index, _ = fit_index(ids, x, 40, "fp", ClusteringConfig(), search=plain)
    auto = _evaluate(index, ids, x, "auto", target=0.9)
    p = auto.probes
    assert 1 < p < 40 and auto.recall_at_10 >= 0.9
    assert _evaluate(index, ids, x, p - 1).recall_at_10 < 0.9
    assert _evaluate(index, ids, x, p + 2).recall_at_10 >= auto.recall_at_10
    capped = _evaluate(index, ids, x, "auto", target=0.9, max_probes=p - 1)
    assert capped.probes == p - 1 and capped.recall_at_10 < 0.9


def test_figures_are_labelled_by_the_queries_they_were_measured_on() -> None:
    ids, x = _mixture()
    catalog_ids, queries = ids[:2500], x[2500:]
    index, _ = fit_index(catalog_ids, x[:2500], 20, "fp", ClusteringConfig())
    labels = pd.Series(np.arange(3000) % 7, index=ids).astype(str)
    held_out = HeldOut(ids[2500:], queries, labels.iloc[2500:])
    search, config = SearchConfig(), EvaluationConfig(sample=300)
    result = evaluate_index(index, catalog_ids, x[:2500], labels, search, config, held_out)
    assert result.calibrated_on == "500 held-out photos"
    assert {"leave_one_out_recall_at_10", "held_out_recall_at_10"} <= set(result.figures())
    assert result.held_out.queries == 500 and result.figures()["held_out_queries"] == 500
    assert result.leave_one_out.queries == 300
    assert result.held_out.precision_at_10 is not None
    without = evaluate_index(index, catalog_ids, x[:2500], labels, search, config)
    assert without.held_out is None and "held_out_recall_at_10" not in without.figures()
    assert "catalog photos" in without.calibrated_on


def test_labels_from_class_folders_or_csv(tmp_path) -> None:
    catalog = pd.DataFrame({"image_id": ["hat/a.jpg", "hat/b.jpg", "shoe/c.jpg"]})
    assert catalog_labels(catalog).to_dict() == {
        "hat/a.jpg": "hat",
        "hat/b.jpg": "hat",
        "shoe/c.jpg": "shoe",
    }
    assert catalog_labels(pd.DataFrame({"image_id": ["a.jpg", "hat/b.jpg"]})) is None
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id,label\na.jpg,x\n")
    assert catalog_labels(catalog, csv).to_dict() == {"a.jpg": "x"}
    csv.write_text("id,label\na.jpg,x\n")
    with pytest.raises(ValueError, match="needs columns image_id,label"):
        catalog_labels(catalog, csv)


def test_auto_sweep_grows_with_the_catalog_and_keeps_its_upper_end() -> None:
    auto = DiagnosticsConfig(max_clusters=500)
    small, large = sweep_values(auto, 400), sweep_values(auto, 10_000)
    assert (small[0], small[-1]) == (20, 80)
    assert (large[0], large[-1]) == (100, 400)
    assert len(large) <= 17 and large == sorted(set(large))
    assert sweep_values(DiagnosticsConfig(max_clusters=100), 10_000)[-1] == 100  # as set
    assert sweep_values(DiagnosticsConfig(), 400)[-1] == 80  # auto: 4 sqrt(n) ...
    assert sweep_values(DiagnosticsConfig(), 10_000)[-1] == 100  # ... at most 100 unsampled


def test_auto_cap_grows_with_the_catalog_within_the_training_sample() -> None:
    from vasrch.index.training import cluster_cap

    auto = DiagnosticsConfig()
    assert cluster_cap(auto, 400) == 80  # the sweep sees them all: 4 sqrt(n), at most 100
    assert cluster_cap(auto, 3_781) == 100
    assert cluster_cap(auto, 20_001) == 566  # sampled: 4 sqrt(n)
    assert cluster_cap(auto, 1_000_000) == 4_000  # 4 sqrt(n)
    assert cluster_cap(auto, 10_000_000, max_train_rows=200_000) == 6_666  # 30 rows each
    assert cluster_cap(auto, 10_000_000) == 12_649
    assert cluster_cap(DiagnosticsConfig(max_clusters=100), 10_000_000) == 100


def test_a_sampled_sweep_is_scaled_to_the_catalog_only_with_auto_bounds() -> None:
    from vasrch.index.training import catalog_k

    auto = DiagnosticsConfig()
    k, reason = catalog_k(auto, 300, [141, 566], 1_000_000, 20_000, 200_000)
    assert k == 2_121  # 300 / sqrt(20,000) = 2.12 sqrt(n)
    assert "scaled to the catalog" in reason and "2.12 sqrt(1,000,000)" in reason
    k, reason = catalog_k(auto, 566, [141, 566], 10_000_000, 20_000, 200_000)
    assert k == 6_666 and "lowered to 6666" in reason
    assert catalog_k(auto, 76, [61, 100], 3_781, 3_781)[0] == 76  # the sweep saw them all
    fixed = DiagnosticsConfig(max_clusters=100)
    k, reason = catalog_k(fixed, 100, [61, 100], 1_000_000, 20_000)
    assert k == 100 and "scaled" not in reason  # an explicit cap works as before
    explicit = DiagnosticsConfig(k_min=10, k_max=40)
    assert catalog_k(explicit, 40, [10, 40], 1_000_000, 20_000)[0] == 40


def test_diagnose_records_the_sample_suggestion_and_the_catalog_k() -> None:
    from vasrch.index.training import diagnose

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    x = (centres[rng.integers(0, 8, 4_000)] + 0.05 * rng.normal(size=(4_000, 16))).astype(
        np.float32
    )
    diag = diagnose(x, DiagnosticsConfig(sample=400, silhouette_sample=400, n_components=None))
    assert diag.swept_k is not None and 20 <= diag.swept_k <= 80
    scaled = round(diag.swept_k / np.sqrt(400) * np.sqrt(4_000))
    assert diag.suggested_k == scaled
    assert "400 of the 4,000 photos" in diag.reason


def test_a_suggestion_at_the_top_of_the_sweep_is_flagged() -> None:
    from vasrch.index.training import edge_note

    sweep = pd.DataFrame(
        {"k": [10, 20, 30], "inertia": [3.0, 2.0, 1.0], "silhouette": [0.1, 0.2, 0.3]}
    )
    assert "largest k swept" in edge_note(sweep, 30, cap=100)
    assert edge_note(sweep, 20, cap=100) is None
    assert edge_note(sweep, 30, cap=30) is None  # nothing larger was allowed


def test_labels_default_to_the_parent_folder() -> None:
    catalog = pd.DataFrame({"image_id": ["shoes/sneakers/a.jpg", "shoes/boots/b.jpg", "hat/c.jpg"]})
    assert catalog_labels(catalog).to_dict() == {
        "shoes/sneakers/a.jpg": "sneakers",
        "shoes/boots/b.jpg": "boots",
        "hat/c.jpg": "hat",
    }


def test_sweep_values_clamped_with_a_warning() -> None:
    diag = DiagnosticsConfig(k_min=2, k_max=40, k_step=1, max_clusters=100)
    with pytest.warns(UserWarning, match="not below the number of images"):
        assert sweep_values(diag, 10) == list(range(2, 10))
    assert sweep_values(DiagnosticsConfig(k_min=5), 4) == []  # too few images to sweep
    with pytest.warns(UserWarning) as caught:
        assert sweep_values(DiagnosticsConfig(k_min=20), 10) == [9]
    assert any("k_min (20) is above the largest k" in str(w.message) for w in caught)


def test_choose_k_auto_and_clamp() -> None:
    assert choose_k(ClusteringConfig(), 7, 100) == 7
    with pytest.warns(UserWarning):
        assert choose_k(ClusteringConfig(num_clusters=50), None, 20) == 20
