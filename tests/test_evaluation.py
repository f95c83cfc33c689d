import numpy as np
import pandas as pd
import pytest

from vasrch.index.evaluation import precision_at_k, recall_at_k, sample_queries
from vasrch.index.search_index import SearchResult


def result(rows):
    ids = np.array(rows, dtype=object)
    scores = np.where(ids == "", -np.inf, 1.0).astype(np.float32)
    return SearchResult(ids=ids, scores=scores)


def test_recall_by_hand():
    exact = result([["a", "b", "c"], ["d", "e", "f"]])
    approx = result([["b", "x", "a"], ["f", "y", "z"]])
    # query 0 finds 2 of 3, query 1 finds 1 of 3
    assert recall_at_k(approx, exact, k=3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    # at k=1 only the first exact answer counts and only the first approximate answer is looked at
    assert recall_at_k(approx, exact, k=1) == 0.0
    assert recall_at_k(exact, exact, k=3) == 1.0


def test_recall_ignores_padding_in_exact_answers():
    exact = result([["a", "", ""], ["", "", ""]])
    approx = result([["a", "b", ""], ["c", "", ""]])
    assert recall_at_k(approx, exact, k=3) == 1.0


def test_precision_by_hand_with_dict_and_series():
    labels = {"a": "shoe", "b": "shoe", "c": "bag", "d": "bag"}
    res = result([["a", "c", "b"], ["d", "", ""]])
    # query 0 (shoe): a, b match -> 2/3; query 1 (bag): d matches, padding misses -> 1/3
    assert precision_at_k(res, ["shoe", "bag"], labels, k=3) == pytest.approx(0.5)
    assert precision_at_k(res, ["shoe", "bag"], pd.Series(labels), k=1) == 1.0
    with pytest.raises(ValueError, match="query labels"):
        precision_at_k(res, ["shoe"], labels, k=1)


def test_sample_queries_is_seeded_distinct_and_clamped():
    a = sample_queries(1000, 50, seed=3)
    assert len(np.unique(a)) == 50 and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, sample_queries(1000, 50, seed=3))
    assert not np.array_equal(a, sample_queries(1000, 50, seed=4))
    np.testing.assert_array_equal(sample_queries(5, 50), np.arange(5))
