import itertools
import json

import numpy as np
import pandas as pd
import pytest

from vasrch.index.clustering import fit_pca, l2_normalise, train_kmeans
from vasrch.index.evaluation import recall_at_k
from vasrch.index.search_index import brute_force, build_index, load_index, save


def catalog(n=600, dim=32, centres=8, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    x = l2_normalise(means[rng.integers(centres, size=n)] + rng.normal(size=(n, dim)))
    ids = np.array([f"img-{i:05d}" for i in range(n)], dtype=object)
    return ids, x


def make_index(ids, x, k=10, projection=None, fingerprint="fp-a"):
    space = projection.transform(x) if projection is not None else x
    model = train_kmeans(space, k, seed=0)
    return build_index(ids, x, model.cluster_centers_, model.labels_, fingerprint, projection)


@pytest.fixture(scope="module")
def small():
    ids, x = catalog()
    return ids, x, make_index(ids, x)


def test_build_groups_vectors_by_cluster(small):
    ids, x, index = small
    assert index.offsets[0] == 0 and index.offsets[-1] == len(ids)
    assert sorted(index.ids) == sorted(ids)
    row = {image_id: i for i, image_id in enumerate(ids)}
    np.testing.assert_array_equal(index.vectors, x[[row[i] for i in index.ids]])
    own = index.centroids[index.labels]
    np.testing.assert_allclose(
        index.distances, np.linalg.norm(index.vectors - own, axis=1), atol=1e-5
    )


def test_one_probe_is_the_kmeans_predicted_cluster():
    ids, x = catalog(n=400, dim=16)
    for spherical in (True, False):
        model = train_kmeans(x, 7, seed=0, spherical=spherical)
        index = build_index(ids, x, model.cluster_centers_, model.labels_, "fp")
        queries = l2_normalise(x[:50] + 0.2)
        answers = index.search(queries, top_n=400, probes=1).ids
        row = {image_id: i for i, image_id in enumerate(ids)}
        for q, predicted in enumerate(model.predict(queries)):
            found = [row[i] for i in answers[q] if i]
            assert set(found) == set(np.flatnonzero(model.labels_ == predicted))


def test_all_probes_equal_brute_force(small):
    ids, x, index = small
    queries = x[:50] + 0.01
    exact = brute_force(queries, ids, x, top_n=10)
    full = index.search(queries, top_n=10, probes=index.k)
    np.testing.assert_array_equal(full.ids, exact.ids)
    np.testing.assert_allclose(full.scores, exact.scores, rtol=1e-5, atol=1e-6)
    by_hand = np.sort(queries @ x.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(exact.scores, by_hand, rtol=1e-5, atol=1e-6)


def test_recall_does_not_fall_as_probes_grow(small):
    ids, x, index = small
    rng = np.random.default_rng(1)
    queries = l2_normalise(x[:200] + 0.3 * rng.normal(size=(200, x.shape[1])))
    exact = brute_force(queries, ids, x, top_n=10)
    recalls = [
        recall_at_k(index.search(queries, 10, probes=p), exact, 10) for p in range(1, index.k + 1)
    ]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(recalls))
    assert recalls[0] < 1.0 and recalls[-1] == 1.0


def test_exclude_removes_query_itself(small):
    ids, x, index = small
    plain = index.search(x[:5], top_n=3, probes=2)
    assert list(plain.ids[:, 0]) == list(ids[:5])
    np.testing.assert_allclose(plain.scores[:, 0], 1.0, rtol=1e-5)
    excl = index.search(x[:5], top_n=3, probes=2, exclude_ids=[*ids[:4], None])
    assert not any(ids[i] in excl.ids[i] for i in range(4))
    assert excl.ids[4, 0] == ids[4]
    np.testing.assert_array_equal(excl.ids[:4, :2], plain.ids[:4, 1:])
    exact = brute_force(x[:4], ids, x, top_n=2, exclude_ids=list(ids[:4]))
    np.testing.assert_array_equal(exact.ids, plain.ids[:4, 1:])
    with pytest.raises(ValueError, match="one entry"):
        index.search(x[:5], exclude_ids=["a"])


def test_padding_when_fewer_answers_than_top_n():
    ids, x = catalog(n=6, dim=4, centres=2)
    index = make_index(ids, x, k=2)
    result = index.search(x[:1], top_n=10, probes=2, exclude_ids=[ids[0]])
    assert (result.ids[0, :5] != "").all() and (result.ids[0, 5:] == "").all()
    assert np.isfinite(result.scores[0, :5]).all() and np.isneginf(result.scores[0, 5:]).all()
    frame = result.to_frame(["q"])
    assert list(frame.columns) == ["image_id", "rank", "neighbour_id", "score"]
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5]
    assert (np.diff(frame["score"]) <= 0).all()


def test_save_load_round_trip_with_projection(tmp_path):
    ids, x = catalog(n=300, dim=24)
    proj = fit_pca(x, 8)
    index = make_index(ids, x, k=6, projection=proj)
    save(index, tmp_path / "index")
    names = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert names == [
        "assignments.parquet",
        "centroids.npy",
        "index.json",
        "offsets.npy",
        "projection.npz",
        "vectors.npy",
    ]
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert (meta["k"], meta["dim"], meta["input_dim"], meta["n"]) == (6, 8, 24, 300)
    table = pd.read_parquet(tmp_path / "index" / "assignments.parquet")
    assert list(table.columns) == ["image_id", "cluster", "distance"]
    assert table["image_id"].tolist() == list(index.ids)
    loaded = load_index(tmp_path / "index", expected_fingerprint="fp-a")
    assert isinstance(loaded.vectors, np.ndarray) and not loaded.vectors.flags.writeable
    a = index.search(x[:20], top_n=5, probes=2)
    b = loaded.search(x[:20], top_n=5, probes=2)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(loaded.labels, table["cluster"].to_numpy())


def test_fingerprint_mismatch_and_bad_dimension_refused(tmp_path, small):
    index = small[2]
    save(index, tmp_path / "ix")
    with pytest.raises(ValueError, match=r"'fp-a'.*'fp-b'.*[Rr]e-extract"):
        load_index(tmp_path / "ix", expected_fingerprint="fp-b")
    with pytest.raises(ValueError, match="dimension 32"):
        index.search(np.ones((2, 31), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        load_index(tmp_path / "nowhere")


def test_build_rejects_duplicate_ids_and_mismatched_centroids():
    ids, x = catalog(n=20, dim=4)
    ids[3] = ids[2]
    with pytest.raises(ValueError, match="unique"):
        build_index(ids, x, x[:2], np.zeros(20, dtype=int), "fp")
    with pytest.raises(ValueError, match="dimension"):
        build_index([str(i) for i in range(20)], x, x[:2, :3], np.zeros(20, dtype=int), "fp")


def test_large_cluster_is_scanned_in_bounded_blocks():
    # One cluster larger than a score block: column chunks must merge into the same top-n.
    rng = np.random.default_rng(3)
    x = l2_normalise(rng.normal(size=(9000, 8)))
    ids = np.array([str(i) for i in range(9000)], dtype=object)
    index = build_index(ids, x, x[:1], np.zeros(9000, dtype=int), "fp")
    queries = x[:700]
    result = index.search(queries, top_n=4, exclude_ids=list(ids[:700]))
    exact = np.argsort(-(queries @ x.T) + 10 * np.eye(700, 9000), axis=1)[:, :4]
    np.testing.assert_array_equal(result.ids, ids[exact])


def test_single_queries_rank_exactly_the_members_of_their_nearest_clusters():
    """One query at a time on a 100k x 256 index (the query server's case): the answer is the
    exact top 10 among the members of the 5 clusters with the nearest centroids. Its speed is
    measured by benchmarks/bench_query_server.py, not here."""
    rng = np.random.default_rng(0)
    x = l2_normalise(rng.normal(size=(100_000, 256)).astype(np.float32))
    labels = rng.integers(316, size=100_000)
    centroids = np.stack([x[labels == c].mean(0) for c in range(316)])
    index = build_index(np.arange(100_000).astype(str), x, centroids, labels, "fp")
    for i in range(20):
        query = x[i : i + 1]
        result = index.search(query, top_n=10, probes=5)
        distance = ((centroids - query) ** 2).sum(axis=1)
        members = np.flatnonzero(np.isin(labels, np.argsort(distance)[:5]))
        exact = members[np.argsort(-(x[members] @ query[0]), kind="stable")[:10]]
        assert result.ids[0].tolist() == [str(m) for m in exact]
