"""The query results page: each query's thumbnail, then its neighbours with rank and score.

``write_query_page`` writes ``results.html`` (inline CSS, no scripts, relative links only)
beside a ``thumbs/`` folder of small JPEGs; rejected queries are listed with their reason.
``templates/query.html.j2`` lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vasrch.atomic_files import write_text_atomic
from vasrch.catalog.products import product_caption, web_link
from vasrch.catalog.sources import Fetching
from vasrch.layout import QueryJobLayout
from vasrch.pages import rendering
from vasrch.pages.thumbnails import write_thumbnails


def write_query_page(
    out_dir: Path,
    table: pd.DataFrame,
    rejected: list[dict[str, str]],
    title: str,
    names: Mapping[str, str] | None = None,
    fetching: Fetching | None = None,
) -> Path:
    """Write ``out_dir/results.html`` from a result table (query, rank, product_id, score,
    image_id, metadata, path) and [{query, reason}] of the rejected queries; each query is
    called by its name in `names` (by path; default: its file name, its path when rejected);
    catalog photos at URLs are read as `fetching` says (the catalog's store options);
    each answer shows its
    product and title and links to the product's `url` when there is one."""
    out_dir = Path(out_dir)
    paths = dict(zip(table["image_id"], table["path"], strict=True))
    paths.update({query: query for query in table["query"]})
    # Query keys are absolute paths and image ids relative ones, so they never collide. The
    # query images are copied: they may lie anywhere, outside what the file server shows.
    queries = list(table["query"])
    thumbs = write_thumbnails(
        [*queries, *table["image_id"]], paths, out_dir, copied=queries, fetching=fetching
    )
    page = rendering.render(
        "query.html.j2",
        title=title,
        queries=_queries(table, names or {}),
        rejected=[{**r, "name": (names or {}).get(r["query"]) or r["query"]} for r in rejected],
        thumbs=thumbs,
    )
    path = QueryJobLayout(out_dir).page
    write_text_atomic(path, page)
    return path


def query_name(query: str, names: Mapping[str, str]) -> str:
    """What a query is called: the name given for its path, else its file name."""
    return names.get(query) or Path(query).name


def _queries(table: pd.DataFrame, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per query, in table order: its name, its key (the path) and its neighbours."""
    return [
        {
            "label": query_name(query, names),
            "key": query,
            "neighbours": [
                {
                    "image_id": row["image_id"],
                    "rank": int(row["rank"]),
                    "score": float(row["score"]),
                    "caption": product_caption(row),
                    "url": web_link(row.get("url")),
                }
                for row in rows.to_dict("records")
            ],
        }
        for query, rows in table.groupby("query", sort=False)
    ]
