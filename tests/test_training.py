import numpy as np
import pandas as pd
import pytest

from vasrch.config import ClusteringConfig, DiagnosticsConfig
from vasrch.training import catalog_labels, choose_k, evaluate_index, fit_index, sweep_values


def _mixture(n: int = 3000, d: int = 32, centres: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d))
    x = means[rng.integers(0, centres, n)] + rng.normal(scale=0.9, size=(n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return np.array([f"img{i:05d}.jpg" for i in range(n)], dtype=object), x


def test_auto_probes_are_the_fewest_reaching_the_target() -> None:
    ids, x = _mixture()
    index, _ = fit_index(ids, x, 40, "fp", ClusteringConfig())
    auto = evaluate_index(index, ids, x, "auto", sample=300, target_recall=0.9)
    p = int(auto["probes"])
    assert 1 < p < 40 and auto["recall_at_10"] >= 0.9
    fewer = evaluate_index(index, ids, x, p - 1, sample=300)
    assert fewer["recall_at_10"] < 0.9
    more = evaluate_index(index, ids, x, p + 2, sample=300)
    assert more["recall_at_10"] >= auto["recall_at_10"]
    capped = evaluate_index(index, ids, x, "auto", sample=300, target_recall=0.9, max_probes=p - 1)
    assert capped["probes"] == p - 1 and capped["recall_at_10"] < 0.9


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


def test_sweep_values_clamped_with_a_warning() -> None:
    diag = DiagnosticsConfig(k_min=2, k_max=40, k_step=1, max_clusters=100)
    with pytest.warns(UserWarning, match="not below the number of images"):
        assert sweep_values(diag, 10) == list(range(2, 10))
    with pytest.raises(ValueError, match="no k to sweep"):
        sweep_values(DiagnosticsConfig(k_min=5), 4)


def test_choose_k_auto_and_clamp() -> None:
    assert choose_k(ClusteringConfig(), 7, 100) == 7
    with pytest.warns(UserWarning):
        assert choose_k(ClusteringConfig(num_clusters=50), None, 20) == 20
