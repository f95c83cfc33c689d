"""The query job's page: each query's thumbnail, then its ranked neighbours."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from vasrch.fileio import write_text_atomic
from vasrch.report import PAGE_CSS, tile, write_thumbnails

RESULTS_HTML = "results.html"


def write_query_page(
    out_dir: Path, table: pd.DataFrame, rejected: list[dict[str, str]], title: str
) -> Path:
    """results.html in out_dir: each query's thumbnail, then its neighbours with rank and score;
    thumbnails are small JPEGs in out_dir/thumbs, linked relatively; rejected queries listed."""
    paths = dict(zip(table["image_id"], table["path"], strict=True))
    paths.update({q: q for q in table["query"]})
    # Query keys are absolute paths and image ids relative ones, so they never collide.
    thumbs = write_thumbnails([*table["query"], *table["image_id"]], paths, out_dir)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for query, rows in table.groupby("query", sort=False):
        parts.append(f'<div class="grid">{tile(Path(query).name, thumbs[query], "query", "query")}')
        parts.append('<span class="arrow">→</span>')
        for row in rows.itertuples(index=False):
            parts.append(tile(row.image_id, thumbs[row.image_id], f"#{row.rank} · {row.score:.3f}"))
        parts.append("</div>")
    if rejected:
        cells = "".join(
            f"<tr><td>{html.escape(r['query'])}</td><td>{html.escape(r['reason'])}</td></tr>"
            for r in rejected
        )
        parts.append(f"<h2>Queries that could not be read</h2><table>{cells}</table>")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    write_text_atomic(out_dir / RESULTS_HTML, page)
    return out_dir / RESULTS_HTML
