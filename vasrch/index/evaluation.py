"""Search quality: recall against exact search, precision against known labels, query samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from vasrch.index.search_index import SearchResult


def recall_at_k(approx: SearchResult, exact: SearchResult, k: int = 10) -> float:
    """Mean over queries of the fraction of the exact top-k that the approximate top-k found.

    Padding ("" ids) is ignored; queries whose exact answer is empty are left out.
    """
    a, e = approx.ids[:, :k], exact.ids[:, :k]
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"approx has {a.shape[0]} queries, exact has {e.shape[0]}")
    found = (e[:, :, None] == a[:, None, :]).any(axis=2) & (e != "")
    wanted = (e != "").sum(axis=1)
    has_answer = wanted > 0
    if not has_answer.any():
        return float("nan")
    return float(np.mean(found.sum(axis=1)[has_answer] / wanted[has_answer]))


def precision_at_k(
    result: SearchResult,
    query_labels: Sequence[str] | np.ndarray,
    label_of: Mapping[str, str] | pd.Series,
    k: int,
) -> float:
    """Mean over queries of the fraction of the top-k answers whose label is the query's label.

    `label_of` maps an image id to its label (a dict, or a Series indexed by image id). A missing
    answer (padding) or an id without a label counts as a miss, so the denominator is always k.
    Leave-one-out is the caller's: search catalog queries with `exclude_ids`.
    """
    query_labels = np.asarray(query_labels, dtype=object)
    if len(query_labels) != result.ids.shape[0]:
        raise ValueError(f"{len(query_labels)} query labels for {result.ids.shape[0]} queries")
    lookup = label_of if isinstance(label_of, pd.Series) else pd.Series(dict(label_of))
    top = result.ids[:, :k]
    labels = lookup.reindex(top.ravel()).to_numpy(dtype=object).reshape(top.shape)
    hits = (labels == query_labels[:, None]) & (top != "")
    return float(np.mean(hits.sum(axis=1) / k))


def sample_queries(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of min(size, n) distinct rows out of n, drawn with a fixed seed."""
    if n < 0 or size < 0:
        raise ValueError(f"n and size must be non-negative, got n={n}, size={size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
