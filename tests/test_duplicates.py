"""Near-duplicate pairs and star groups: no chaining, scores against the representative."""

import itertools

import numpy as np
import pandas as pd
import pytest

from vasrch.duplicates.groups import (
    GROUP_COLUMNS,
    duplicate_groups,
    duplicate_pairs,
    group_summary,
    newest_neighbours,
)
from vasrch.layout import RunLayout, WorkspaceLayout


def pairs_of(edges: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(edges, columns=["a", "b", "score"])


def check_stars(groups: pd.DataFrame, pairs: pd.DataFrame) -> None:
    """Every member is a duplicate of its group's representative, with that pair's score."""
    score = {frozenset((a, b)): s for a, b, s in pairs.itertuples(index=False)}
    assert not groups["image_id"].duplicated().any()
    for _, group in groups.groupby("group_id"):
        assert len(group) >= 2 and group["is_representative"].sum() == 1
        rep = group.loc[group["is_representative"], "image_id"].item()
        assert group["is_representative"].iloc[0]
        for member, got in zip(group["image_id"], group["score_to_representative"], strict=True):
            expected = 1.0 if member == rep else score.get(frozenset((member, rep)))
            assert expected is not None, f"{member} is grouped with {rep}, not a duplicate of it"
            assert got == pytest.approx(expected)


def test_a_chain_is_not_one_group():
    # A~B and B~C, but A and C are not duplicates; C~D.
    pairs = pairs_of([("A", "B", 0.99), ("B", "C", 0.98), ("C", "D", 0.97)])
    groups = duplicate_groups(pairs)
    check_stars(groups, pairs)
    assert groups.to_dict("list") == {
        "group_id": [0, 0, 1, 1],
        "image_id": ["B", "A", "D", "C"],
        "is_representative": [True, False, True, False],
        "score_to_representative": pytest.approx([1.0, 0.99, 1.0, 0.97]),
    }


def test_random_chains_never_group_a_non_duplicate_of_the_representative():
    rng = np.random.default_rng(3)
    for trial in range(30):
        nodes = [f"n{i:02d}" for i in range(40)]
        edges = set()
        for _ in range(25):  # chains of 2 to 6 links through random nodes
            chain = rng.choice(nodes, size=int(rng.integers(3, 8)), replace=False)
            edges.update(tuple(sorted(p)) for p in itertools.pairwise(chain))
        pairs = pairs_of([(a, b, float(rng.uniform(0.9, 1.0))) for a, b in sorted(edges)])
        groups = duplicate_groups(pairs, ids_order=nodes[::-1])
        check_stars(groups, pairs)
        # Every image with a duplicate ends up in a group unless all its duplicates were taken.
        assert len(groups) > 0.5 * len(set(pairs["a"]) | set(pairs["b"])), trial


def test_groups_do_not_depend_on_row_order():
    rng = np.random.default_rng(5)
    ends = np.sort(rng.choice(30, size=(60, 2)), axis=1)
    ends = np.unique(ends[ends[:, 0] < ends[:, 1]], axis=0)
    pairs = pairs_of(
        [(f"i{a:02d}", f"i{b:02d}", float(rng.uniform(0.9, 1))) for a, b in ends.tolist()]
    )
    first = duplicate_groups(pairs)
    again = duplicate_groups(pairs.sample(frac=1, random_state=1))
    pd.testing.assert_frame_equal(first, again)
    check_stars(first, pairs)


def test_representative_has_most_duplicates_then_earliest_listing():
    pairs = pairs_of(
        [
            ("a", "b", 0.99),
            ("a", "c", 0.98),
            ("b", "c", 0.90),
            ("x", "y", 0.97),
            ("m", "n", 0.96),
        ]
    )
    groups = duplicate_groups(pairs)
    reps = groups[groups["is_representative"]]["image_id"].tolist()
    # a: two duplicates with the best scores; then the pairs ordered by representative id.
    assert reps == ["a", "m", "x"]
    assert groups["group_id"].tolist() == [0, 0, 0, 1, 1, 2, 2]
    preferred = duplicate_groups(pairs, ids_order=["y", "x", "n", "m"])
    assert preferred[preferred["is_representative"]]["image_id"].tolist() == ["a", "n", "y"]
    empty = duplicate_groups(pairs.iloc[:0])
    assert empty.empty and dict(empty.dtypes.astype(str)) == GROUP_COLUMNS | {"image_id": "object"}


def test_a_member_joins_the_representative_it_scores_best_against():
    # r1 (3 duplicates) and r2 (2) are both representatives; m is a duplicate of both.
    pairs = pairs_of(
        [
            ("r1", "p", 0.95),
            ("r1", "q", 0.95),
            ("m", "r1", 0.91),
            ("m", "r2", 0.99),
            ("r2", "s", 0.93),
        ]
    )
    groups = duplicate_groups(pairs)
    check_stars(groups, pairs)
    group_of = dict(zip(groups["image_id"], groups["group_id"], strict=True))
    assert group_of["m"] == group_of["r2"] != group_of["r1"]


def test_duplicate_pairs_use_the_duplicate_score_and_dedupe_both_directions():
    neighbours = pd.DataFrame(
        {
            "image_id": ["a", "b", "a", "c", "e"],
            "rank": [1, 1, 2, 1, 1],
            "neighbour_id": ["b", "a", "c", "d", "f"],
            "score": [0.99, 0.99, 0.5, 0.96, 0.99],
            "duplicate_score": [0.97, 0.98, 0.99, 0.2, np.nan],
        }
    )
    pairs = duplicate_pairs(neighbours, threshold=0.95)
    assert pairs[["a", "b"]].values.tolist() == [["a", "c"], ["a", "b"]]
    np.testing.assert_allclose(pairs["score"], [0.99, 0.98])


def test_group_summary_lists_members_with_scores():
    groups = duplicate_groups(pairs_of([("a", "b", 0.99), ("a", "c", 0.95)]))
    assert group_summary(groups).to_dict("records") == [
        {"group_id": 0, "size": 3, "representative": "a", "members": "b (0.990), c (0.950)"}
    ]


def test_newest_complete_bulk_job_wins_over_the_run_folder(tmp_path):
    workspace = WorkspaceLayout(tmp_path)
    run = workspace.run("r1")
    run.root.mkdir(parents=True)
    assert newest_neighbours(tmp_path, run.root) == run.bulk
    older, newer, unfinished = (workspace.bulk_job("r1", j) for j in ("j1", "j2", "j3"))
    for job in (older, newer, unfinished):
        job.root.mkdir(parents=True)
    for job in (older, newer):
        job.complete.write_text("run r1\n")
    assert newest_neighbours(tmp_path, run.root) == newer
    assert newest_neighbours(tmp_path, RunLayout(tmp_path / "runs" / "r2").root).root.name == (
        "bulk"
    )
