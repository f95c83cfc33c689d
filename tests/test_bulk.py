import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from vasrch.bulk.neighbours import (
    NEIGHBOUR_COLUMNS,
    bulk_neighbours_for_clusters,
    iter_bulk_neighbours,
    plan_cluster_chunks,
)
from vasrch.duplicates.groups import duplicate_groups, duplicate_pairs
from vasrch.features.duplicate_prints import PRINT_BYTES
from vasrch.features.print_similarity import print_scores
from vasrch.index.clustering import l2_normalise, train_kmeans
from vasrch.index.search_index import brute_force, build_index


def small_index(n=500, dim=24, k=8, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(6, dim))
    x = l2_normalise(means[rng.integers(6, size=n)] + rng.normal(size=(n, dim)))
    ids = np.array([f"p{i:04d}" for i in range(n)], dtype=object)
    model = train_kmeans(x, k, seed=0)
    return ids, x, build_index(ids, x, model.cluster_centers_, model.labels_, "fp")


def test_all_probes_bulk_equals_brute_force_without_self():
    ids, x, index = small_index()
    chunks = plan_cluster_chunks(index, 150)
    frame = pd.concat(
        [bulk_neighbours_for_clusters(index, c, top_n=5, probes=index.k) for c in chunks]
    )
    assert list(frame.columns) == NEIGHBOUR_COLUMNS
    assert frame["duplicate_score"].isna().all()  # an index without prints
    # every photo is its own product here
    assert (frame["product_id"] == frame["image_id"]).all()
    assert (frame["neighbour_product_id"] == frame["neighbour_id"]).all()
    assert len(frame) == len(ids) * 5
    assert not (frame["image_id"] == frame["neighbour_id"]).any()
    exact = brute_force(x, ids, x, top_n=5, exclude_ids=list(ids)).to_frame(ids)
    merged = exact.merge(frame, on=["image_id", "rank"], suffixes=("_exact", "_bulk"))
    assert len(merged) == len(exact)
    assert (merged["neighbour_id_exact"] == merged["neighbour_id_bulk"]).all()
    np.testing.assert_allclose(merged["score_exact"], merged["score_bulk"], rtol=1e-5, atol=1e-6)


def test_bulk_matches_query_scoring_with_few_probes():
    ids, x, index = small_index()
    members = index.ids[index.offsets[2] : index.offsets[3]]
    frame = bulk_neighbours_for_clusters(index, [2], top_n=4, probes=2, block_rows=7)
    row = {image_id: i for i, image_id in enumerate(ids)}
    query = index.search(x[[row[m] for m in members]], 4, probes=2, exclude_ids=list(members))
    assert frame["neighbour_id"].tolist() == list(query.ids.ravel())
    assert frame["image_id"].tolist() == list(np.repeat(members, 4))


def test_iter_bulk_neighbours_runs_chunks_in_parallel_in_order():
    _, _, index = small_index(k=12)
    chunks = plan_cluster_chunks(index, 60)
    assert len(chunks) > 4
    produced = list(iter_bulk_neighbours(index, 3, 2, max_rows_per_chunk=60, workers=2))
    assert [c for c, _ in produced] == chunks
    for chunk, frame in produced:
        pd.testing.assert_frame_equal(frame, bulk_neighbours_for_clusters(index, chunk, 3, 2))


def test_plan_cluster_chunks_covers_each_cluster_once_within_bounds():
    _, _, index = small_index(k=12)
    sizes = index.cluster_sizes
    chunks = plan_cluster_chunks(index, 100)
    flat = [c for chunk in chunks for c in chunk]
    assert sorted(flat) == list(np.flatnonzero(sizes))
    for chunk in chunks:
        assert len(chunk) == 1 or sizes[chunk].sum() <= 100
    assert plan_cluster_chunks(index, 10**9) == [list(np.flatnonzero(sizes))]
    with pytest.raises(ValueError, match="at least 1"):
        plan_cluster_chunks(index, 0)


def test_plan_cluster_chunks_evens_out_rows_in_a_multiple_of_parts():
    _, _, index = small_index(n=2000, k=40)
    sizes = index.cluster_sizes
    for limit, parts in ((250, 1), (250, 2), (250, 3), (700, 2)):
        chunks = plan_cluster_chunks(index, limit, parts)
        rows = [int(sizes[chunk].sum()) for chunk in chunks]
        assert [c for chunk in chunks for c in chunk] == list(np.flatnonzero(sizes))
        assert len(chunks) % parts == 0 and max(rows) <= limit
        # each cut is off an equal share by at most the cluster it falls in
        assert max(rows) - min(rows) <= 2 * sizes.max()
    assert len(plan_cluster_chunks(index, 10**9, 4)) == 4
    with pytest.raises(ValueError, match="at least 1"):
        plan_cluster_chunks(index, 100, 0)


def test_planted_copies_with_matching_prints_form_one_group_each():
    rng = np.random.default_rng(7)
    dim = 64
    bases = l2_normalise(rng.normal(size=(5, dim)))
    copies = [bases[g] + 0.01 * rng.normal(size=dim) for g in range(5) for _ in range(g % 3 + 1)]
    unrelated = rng.normal(size=(400, dim))
    x = l2_normalise(np.vstack([bases, np.array(copies), unrelated]))
    group_of = list(range(5)) + [g for g in range(5) for _ in range(g % 3 + 1)]
    prints = rng.integers(0, 256, size=(len(x), PRINT_BYTES), dtype=np.uint8)
    jitter = rng.integers(-4, 5, size=(len(copies), PRINT_BYTES))
    prints[5 : 5 + len(copies)] = np.clip(prints[group_of[5:]] + jitter, 0, 255)
    ids = np.array([f"id{i:03d}" for i in range(len(x))], dtype=object)
    model = train_kmeans(x, 6, seed=0)
    index = build_index(ids, x, model.cluster_centers_, model.labels_, "fp", prints=prints)
    frame = pd.concat(
        [
            bulk_neighbours_for_clusters(index, c, 5, probes=3)
            for c in plan_cluster_chunks(index, 80)
        ]
    )
    rows = index.rows_of(frame["image_id"].tolist()), index.rows_of(frame["neighbour_id"].tolist())
    expected = print_scores(index.prints, *rows)
    np.testing.assert_allclose(frame["duplicate_score"], expected, atol=1e-4)
    groups = duplicate_groups(duplicate_pairs(frame, threshold=0.9))
    planted = {g: {ids[i] for i, gg in enumerate(group_of) if gg == g} for g in range(5)}
    found = {gid: set(members) for gid, members in groups.groupby("group_id")["image_id"]}
    assert sorted(map(sorted, found.values())) == sorted(map(sorted, planted.values()))
    assert groups.groupby("group_id")["is_representative"].sum().eq(1).all()
    # Only the first `candidates` neighbours of each image are scored, with the same scores.
    first = pd.concat(
        [
            bulk_neighbours_for_clusters(index, c, 5, probes=3, candidates=2)
            for c in plan_cluster_chunks(index, 80)
        ]
    )
    pd.testing.assert_frame_equal(
        first.drop(columns="duplicate_score"), frame.drop(columns="duplicate_score")
    )
    scored = (first["rank"] <= 2).to_numpy()
    assert np.isnan(first["duplicate_score"].to_numpy()[~scored]).all()
    np.testing.assert_allclose(
        first["duplicate_score"].to_numpy()[scored],
        frame["duplicate_score"].to_numpy()[scored],
        atol=1e-6,
    )


def large_index(n, dim, k, seed=0):
    rng = np.random.default_rng(seed)
    x = l2_normalise(rng.standard_normal(size=(n, dim), dtype=np.float32))
    centroids = x[rng.choice(n, size=k, replace=False)]
    labels = np.concatenate(
        [np.argmax(x[s : s + 50_000] @ centroids.T, axis=1) for s in range(0, n, 50_000)]
    )
    ids = np.char.add("img", np.arange(n).astype(str)).astype(object)
    return build_index(ids, x, centroids, labels, "fp")


def peak_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_bulk_memory_is_bounded_by_block_not_catalog():
    n = 200_000
    index = large_index(n, 64, k=400)
    chunk = plan_cluster_chunks(index, 10_000)[0]
    members = int(index.cluster_sizes[chunk].sum())
    start = time.perf_counter()
    small_peak, small = peak_bytes(
        lambda: bulk_neighbours_for_clusters(index, chunk, top_n=10, probes=2, block_rows=256)
    )
    big_peak, big = peak_bytes(
        lambda: bulk_neighbours_for_clusters(index, chunk, top_n=10, probes=2, block_rows=4096)
    )
    print(
        f"\n{members} queries over {n} x 64: peak {small_peak / 2**20:.1f} MiB (block 256), "
        f"{big_peak / 2**20:.1f} MiB (block 4096); n*n*4 = {n * n * 4 / 2**30:.0f} GiB; "
        f"{time.perf_counter() - start:.1f} s"
    )
    pd.testing.assert_frame_equal(small, big)
    assert len(big) == members * 10
    output = big.memory_usage(deep=False).sum()
    # Working memory: the output, the query block's centroid scores and one bounded score block
    # (4M scores + their argpartition indices = 48 MiB); nothing of order n*n, nothing of order n.
    assert big_peak < 3 * output + 4096 * index.k * 12 + 64 * 2**20
    assert big_peak < n * n * 4 / 1000
    assert small_peak < big_peak
