"""The result table of a query job (query, rank, product_id, score, image_id, the product's
metadata, and each photo's path), and how the warm query service's JSON answers map onto it:
one function, so a change of either shape is made here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# Every result table starts with these, then the product's metadata columns (and `path` only
# when asked for: answers do not expose the server's files by default).
RESULT_COLUMNS = ["query", "rank", "product_id", "score", "image_id"]


def table_from_answers(
    answers: Iterable[tuple[str, dict[str, Any]]], paths: Mapping[str, str]
) -> pd.DataFrame:
    """The result table of (query key, the service's answer to it) pairs, each photo's path
    from `paths` (the run's catalog; an answer's own `query` and `path` are never used), typed
    as a local search's table (the answer's floats are float32 values)."""
    rows = [
        {"query": query, **{k: v for k, v in r.items() if k not in ("query", "path")}}
        for query, answer in answers
        for r in answer["results"]
    ]
    table = pd.DataFrame(rows, columns=None if rows else RESULT_COLUMNS)
    table["path"] = table["image_id"].map(paths)
    return typed(table)


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """A result table with one set of dtypes whoever made it: text as objects, rank int32,
    score float32."""
    text = {c: object for c in table.columns if c not in ("rank", "score")}
    return table.astype({**text, "rank": "int32", "score": "float32"})
