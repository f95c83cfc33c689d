import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA

from vasrch.index.clustering import (
    Projection,
    fit_pca,
    l2_normalise,
    plot_sweep,
    suggest_k,
    sweep_k,
    train_kmeans,
)
from vasrch.index.principal_axes import principal_axes


def blobs(n_centres: int, per_centre: int = 60, dim: int = 64, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.normal(size=(n_centres, dim)))
    labels = np.repeat(np.arange(n_centres), per_centre)
    x = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    return l2_normalise(x), labels


@pytest.mark.parametrize("true_k", [6, 12])
@pytest.mark.parametrize("rule", ["silhouette", "knee", "both"])
def test_sweep_suggests_true_k_on_separated_blobs(true_k, rule):
    x, _ = blobs(true_k, seed=true_k)
    sweep = sweep_k(x, range(2, 25), seed=0)
    assert list(sweep.columns) == ["k", "inertia", "silhouette"]
    assert suggest_k(sweep, rule) == true_k


def test_sweep_drops_k_too_large_and_rejects_k_below_two():
    x, _ = blobs(3, per_centre=4)
    with pytest.warns(UserWarning, match="dropping k values"):
        sweep = sweep_k(x, [2, 3, 12, 40])
    assert sweep["k"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="at least 2"):
        sweep_k(x, [1, 2])


def test_sweep_uses_minibatch_and_sampled_silhouette_when_large():
    x, _ = blobs(4, per_centre=300, dim=16)
    sweep = sweep_k(x, [3, 4, 5], silhouette_sample=200, minibatch_above=500)
    assert suggest_k(sweep, "silhouette") == 4
    assert np.all(np.isfinite(sweep["inertia"]))


def test_suggest_k_rules_on_a_hand_made_table():
    # Inertia drops steeply until k=4, then flattens; silhouette peaks at k=2, then at k=6.
    sweep = pd.DataFrame(
        {
            "k": [2, 3, 4, 5, 6, 7, 8],
            "inertia": [100.0, 60.0, 25.0, 22.0, 20.0, 19.0, 18.0],
            "silhouette": [0.9, 0.3, 0.4, 0.45, 0.5, 0.2, 0.1],
        }
    )
    assert suggest_k(sweep, "silhouette") == 2
    assert suggest_k(sweep, "knee") == 4
    assert suggest_k(sweep, "both") == 6
    with pytest.raises(ValueError, match="rule"):
        suggest_k(sweep, "median")


def test_pca_projection_transform_save_load(tmp_path):
    x, _ = blobs(5, per_centre=20, dim=32)
    proj = fit_pca(x, 8, seed=1)
    y = proj.transform(x)
    assert y.dtype == np.float32 and y.shape == (100, 8)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    assert proj.explained_variance_ratio.shape == (8,)
    assert np.all(np.diff(proj.explained_variance_ratio) <= 1e-6)
    path = proj.save(tmp_path / "pca.npz")
    loaded = Projection.load(path)
    np.testing.assert_array_equal(loaded.transform(x), y)
    with pytest.raises(ValueError, match="dimension 32"):
        proj.transform(x[:, :10])


def test_streamed_pca_matches_scikit_learn_on_a_memory_mapped_matrix(tmp_path):
    # features with a large common mean, as CNN activations have, read in chunks of 500 rows
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2_000, 48)) @ rng.normal(size=(48, 48)) + 40.0
    path = tmp_path / "x.npy"
    np.save(path, x.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    axes = principal_axes(mapped, np.arange(len(mapped)), chunk_rows=500)
    reference = PCA(6).fit(x)
    np.testing.assert_allclose(axes.mean, reference.mean_, atol=1e-3)
    np.testing.assert_allclose(axes.directions[:6], reference.components_, atol=1e-3)
    np.testing.assert_allclose(
        axes.explained_variance_ratio(6), reference.explained_variance_ratio_, rtol=1e-4
    )
    # a sample of rows: the PCA of exactly those rows
    proj = fit_pca(mapped, 6, seed=2, max_rows=300)
    rows = np.sort(np.random.default_rng(2).choice(len(x), 300, replace=False))
    np.testing.assert_allclose(proj.components, PCA(6).fit(x[rows]).components_, atol=1e-3)


def test_pca_clamps_components_with_warning():
    x, _ = blobs(2, per_centre=3, dim=16)
    with pytest.warns(UserWarning, match="using 6"):
        proj = fit_pca(x, 50)
    assert proj.output_dim == 6


def test_plot_sweep_writes_png(tmp_path):
    x, _ = blobs(3, per_centre=20, dim=8)
    sweep = sweep_k(x, [2, 3, 4, 5])
    out = plot_sweep(sweep, suggest_k(sweep), tmp_path / "diag" / "elbow_silhouette.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 100
    assert [p.name for p in out.parent.iterdir()] == ["elbow_silhouette.png"]


def test_train_kmeans_small_and_large_and_errors():
    x, labels = blobs(5, per_centre=40, dim=16)
    model = train_kmeans(x, 5, seed=0)
    assert isinstance(model, KMeans)
    # Each true blob maps to exactly one cluster.
    assert all(len(np.unique(model.labels_[labels == c])) == 1 for c in range(5))
    euclidean = train_kmeans(x, 5, seed=0, spherical=False)
    assert isinstance(euclidean, KMeans)
    assert all(len(np.unique(euclidean.labels_[labels == c])) == 1 for c in range(5))
    big = train_kmeans(x, 5, seed=0, minibatch_above=100, spherical=False)
    assert isinstance(big, MiniBatchKMeans)
    with pytest.raises(ValueError, match="more than the number of vectors"):
        train_kmeans(x, 500)
    with pytest.raises(ValueError, match="at least 1"):
        train_kmeans(x, 0)


def test_train_kmeans_on_a_sample_then_predict():
    x, labels = blobs(5, per_centre=200, dim=16)
    model = train_kmeans(x, 5, seed=0, max_train_rows=100)
    assert len(model.labels_) == 100
    predicted = model.predict(x)
    assert all(len(np.unique(predicted[labels == c])) == 1 for c in range(5))


def test_train_kmeans_warm_start_from_previous_centroids():
    x, _ = blobs(5, per_centre=40, dim=16)
    first = train_kmeans(x, 5, seed=0)
    warm = train_kmeans(x, 5, seed=123, init_centroids=first.cluster_centers_)
    np.testing.assert_allclose(warm.cluster_centers_, first.cluster_centers_, atol=1e-5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_kmeans(x, 4, init_centroids=first.cluster_centers_)
    assert any("do not match" in str(w.message) for w in caught)


def test_spherical_kmeans_predict_is_cosine_assignment():
    x, labels = blobs(7, per_centre=50, dim=32, noise=0.2)
    model = train_kmeans(x, 7, seed=0)
    centres = model.cluster_centers_
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x), np.argmax(x @ centres.T, axis=1))
    np.testing.assert_array_equal(model.labels_, model.predict(x))
    expected_inertia = np.sum((x - centres[model.labels_]) ** 2)
    assert model.inertia_ == pytest.approx(expected_inertia, rel=1e-4)
    # Each centroid is the normalised mean of its members (a fixed point of spherical k-means).
    for c in range(7):
        np.testing.assert_allclose(
            centres[c], l2_normalise(x[model.labels_ == c].mean(0, keepdims=True))[0], atol=1e-5
        )
    assert all(len(np.unique(model.labels_[labels == c])) == 1 for c in range(7))
    assert model.get_params()["max_iter"] == 300
