"""The result table of a query job (query, rank, image_id, path, score), and how the warm query
service's JSON answers map onto it: one function, so a change of either shape is made here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

RESULT_COLUMNS = ["query", "rank", "image_id", "path", "score"]


def table_from_answers(answers: Iterable[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """The result table of (query key, the service's answer to it) pairs, with the dtypes a
    local search gives (rank int32, score float32: the answer's floats are float32 values)."""
    rows = [
        (query, r["rank"], r["image_id"], r["path"], r["score"])
        for query, answer in answers
        for r in answer["results"]
    ]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS).astype({"rank": "int32", "score": "float32"})
