"""A query job's answers as Markdown for the Prefect UI, in a shape that fits its artifact pane:
a link to the full page, then per query its name, a link to its photo and a narrow table (rank,
product, score) of its top results, and the queries that could not be read.

Text from the catalog or the query (titles, ids, names, reasons) is shown as plain text: every
ASCII punctuation mark is backslash-escaped, which the UI's renderer shows as the mark itself, so
no title becomes a link, an image, emphasis, HTML or a new table cell. It never goes into a
link's text (the renderer shows escapes there as typed): the links are the ranks, each opening
the photo's thumbnail in the job folder (which the workspace file server serves), `photo` and
the page's name. The UI does not wrap table cells, so long titles are cut (results.html has
them whole); product ids never are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from vasrch.catalog.products import product_caption
from vasrch.layout import QueryJobLayout
from vasrch.pages.query_page import query_name
from vasrch.pages.thumbnails import THUMBS_DIR, thumb_name

MAX_QUERIES = 25  # queries shown; results.html holds them all
MAX_RESULTS = 5  # results shown per query
MAX_TITLE = 60  # characters of a title shown (the pane does not wrap table cells)
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: str) -> str:
    """`text` on one line, shown as typed in Markdown (a table cell included)."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


def _thumb_link(job: QueryJobLayout, key: str, text: str, link: Callable[[Path], str]) -> str:
    """`text` (never catalog text) linked to the image's thumbnail, to the page when it has none."""
    thumb = job.root / THUMBS_DIR / thumb_name(key)
    return f"[{text}]({link(thumb if thumb.is_file() else job.page)})"


def results_markdown(
    job: QueryJobLayout,
    table: pd.DataFrame,
    rejected: list[dict[str, str]],
    heading: str,
    link: Callable[[Path], str],
    names: Mapping[str, str] | None = None,
) -> str:
    """The job's answers as Markdown: `heading` (Markdown), a link to results.html, then for
    the first MAX_QUERIES queries their name (`names` by path, else the file name) and a table
    of their top MAX_RESULTS results, then the queries not read (by name, else path)."""
    names = names or {}
    queries = list(dict.fromkeys(table["query"]))
    shown = queries[:MAX_QUERIES]
    top = int(table["rank"].max()) if len(table) else 0
    lines = [heading, "", f"All results, with pictures: [{job.page.name}]({link(job.page)})", ""]
    if len(shown) < len(queries) or top > MAX_RESULTS:
        lines += [f"Below: the top {min(top, MAX_RESULTS)} of the first {len(shown)} queries.", ""]
    by_query = table[table["rank"] <= MAX_RESULTS].groupby("query", sort=False)
    for query in shown:
        photo = _thumb_link(job, query, "photo", link)
        lines += [f"Query {plain(query_name(query, names))} · {photo}", ""]
        lines += ["| rank | product | score |", "|--:|:--|--:|"]
        for row in by_query.get_group(query).to_dict("records"):
            rank = _thumb_link(job, row["image_id"], str(int(row["rank"])), link)
            lines.append(f"| {rank} | {plain(_caption(row))} | {row['score']:.4f} |")
        lines.append("")
    if rejected:
        lines += [f"Not read ({len(rejected)}):", ""]
        lines += [
            f"- {plain(names.get(r['query']) or r['query'])}: {plain(r['reason'])}"
            for r in rejected
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _caption(row: Mapping[str, object]) -> str:
    """The result's product id (whole) and title (cut to MAX_TITLE characters)."""
    title = " ".join(str(row.get("title") or "").split())
    if len(title) > MAX_TITLE:
        title = title[: MAX_TITLE - 1].rstrip() + "…"
    return product_caption({**row, "title": title})
