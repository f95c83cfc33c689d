"""The original library's sample code, verbatim, on generated images."""

import json

import joblib
import pandas as pd
import pytest

from vasrch import extract_features, get_optimal_num_clusters, search_similar_images, train_clusters


def test_sample_code_runs_verbatim(tmp_path, demo_catalog) -> None:
    image_folder = str(demo_catalog)
    features_folder = str(tmp_path / "features")
    model_filename = str(tmp_path / "model.pkl")
    csv_file = str(tmp_path / "clusters.csv")
    num_clusters = 8
    top_n = 5
    image_path = str(demo_catalog / "mug" / "mug_001.jpg")

    summary = extract_features(image_folder, features_folder)
    with pytest.warns(UserWarning, match="max_clusters=100"):
        visualize_clusters = get_optimal_num_clusters(
            features_folder, max_clusters=100, n_components=10
        )
    train_clusters(features_folder, model_filename, csv_file, num_clusters)
    similar_images = search_similar_images(image_path, model_filename, csv_file, top_n)

    assert summary.seen == 48 and summary.new == 48 and summary.rejected == 0
    assert visualize_clusters.plot.is_file()
    assert list(visualize_clusters.sweep["k"]) == list(range(2, 48))
    assert 2 <= visualize_clusters.suggested_k < 48
    model = joblib.load(model_filename)
    assert model.cluster_centers_.shape[0] == num_clusters
    table = pd.read_csv(csv_file)
    assert len(table) == 48 and set(table["cluster"]) <= set(range(num_clusters))
    assert "mug/mug_001.jpg" in set(table["image"])
    assert len(similar_images) == top_n
    assert similar_images[0] == image_path
    assert sum("/mug/" in p for p in similar_images) >= 4
    assert extract_features(image_folder, features_folder).reused == 48
    hats = search_similar_images(
        image_path, model_filename, csv_file, 5, filters={"category": "hat"}
    )
    assert len(hats) == 5 and all("/hat/" in p for p in hats)
    with pytest.raises(ValueError, match="unknown filter column 'colour'"):
        search_similar_images(image_path, model_filename, csv_file, filters={"colour": "red"})


def test_search_refuses_an_index_folder_changed_after_training(tmp_path, demo_catalog) -> None:
    from vasrch.hashing import IntegrityError

    features = tmp_path / "features"
    extract_features(demo_catalog, features, weights="none", image_size=32)
    model, csv = tmp_path / "model.joblib", tmp_path / "clusters.csv"
    train_clusters(features, model, csv, 4)
    folder = tmp_path / "model.joblib.index"
    hashes = json.loads((folder / "hashes.json").read_text())
    assert {"centroids.npy", "vectors.npy", "index.json", "vasrch-features.json"} <= set(hashes)
    query = next(demo_catalog.rglob("*.jpg"))
    assert len(search_similar_images(query, model, csv, top_n=3)) == 3
    centroids = folder / "centroids.npy"
    original = centroids.read_bytes()
    centroids.write_bytes(original[:-4] + b"\x00\x00\x80\x3f")
    with pytest.raises(IntegrityError, match=r"centroids\.npy does not match its sha256"):
        search_similar_images(query, model, csv)
    centroids.write_bytes(original)
    (folder / "extra.npy").write_bytes(b"planted")
    with pytest.raises(IntegrityError, match=r"extra\.npy is not listed"):
        search_similar_images(query, model, csv)
    (folder / "extra.npy").unlink()
    (folder / "hashes.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"hashes\.json is missing"):
        search_similar_images(query, model, csv)
