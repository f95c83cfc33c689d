"""A query job's answers as Markdown for the Prefect UI: a table of each query's top products
(id and title) with their scores, every image linked to its thumbnail in the job folder (which
the workspace file server serves, so the links open from the UI), and the queries that could
not be read."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vasrch.catalog.products import product_caption
from vasrch.layout import QueryJobLayout
from vasrch.pages.thumbnails import THUMBS_DIR, thumb_name

MAX_QUERIES = 100  # queries shown; results.html holds them all
MAX_RESULTS = 10  # results shown per query
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|])")


def _escape(text: str) -> str:
    """Text shown literally in a Markdown table cell."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _image(job: QueryJobLayout, key: str, label: str, link: Callable[[Path], str]) -> str:
    """`label` linked to the image's thumbnail (to the page when it has none)."""
    thumb = job.root / THUMBS_DIR / thumb_name(key)
    return f"[{_escape(label)}]({link(thumb if thumb.is_file() else job.page)})"


def results_markdown(
    job: QueryJobLayout,
    table: pd.DataFrame,
    rejected: list[dict[str, str]],
    heading: str,
    link: Callable[[Path], str],
) -> str:
    """The job's answers as Markdown: `heading`, a link to results.html, one table row per query
    (its top MAX_RESULTS results, linked, with scores), then the queries not read."""
    queries = list(dict.fromkeys(table["query"]))
    shown = queries[:MAX_QUERIES]
    width = int(min(table["rank"].max(), MAX_RESULTS)) if len(table) else 0
    lines = [f"{heading} · [all results: {job.page.name}]({link(job.page)})", ""]
    if len(shown) < len(queries):
        lines += [f"The first {len(shown)} of {len(queries)} queries:", ""]
    if shown:
        lines += [
            "| query | " + " | ".join(f"{rank}" for rank in range(1, width + 1)) + " |",
            "|---" * (width + 1) + "|",
        ]
        by_query = table[table["rank"] <= width].groupby("query", sort=False)
        for query in shown:
            cells = [
                f"{_image(job, row['image_id'], product_caption(row), link)} {row['score']:.4f}"
                for row in by_query.get_group(query).to_dict("records")
            ]
            cells += [""] * (width - len(cells))
            lines.append(f"| {_image(job, query, Path(query).name, link)} | {' | '.join(cells)} |")
    if rejected:
        lines += ["", f"Not read ({len(rejected)}):", ""]
        lines += [f"- {_escape(r['query'])}: {_escape(r['reason'])}" for r in rejected]
    return "\n".join(lines) + "\n"
