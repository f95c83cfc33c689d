"""The `query-results` artifact's Markdown, rendered as CommonMark with tables (as the Prefect UI
renders it): titles and names read as typed and inject nothing, four narrow columns, the top
results of each query, every link an http one of ours."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from tests.imagefactory import write_good_images
from vasrch.errors import UsageError
from vasrch.layout import QueryJobLayout
from vasrch.pages.query_artifact import (
    MAX_QUERIES,
    MAX_RESULTS,
    MAX_TITLE,
    plain,
    results_markdown,
)
from vasrch.pages.thumbnails import THUMBS_DIR, thumb_name
from vasrch.query_jobs.job import query_names

HOSTILE = [
    "Sneaker (reseller) #1251",
    "a | pipe <script>alert(1)</script>",
    "[x](javascript:alert(2)) ![i](http://evil.example/i.png)",
    "*star* _under_ `code` &amp; <b>bold</b>",
    "http://evil.example www.evil.example ~~gone~~ 1. <!-- x -->",
    "line\nbreak\\ end\\",
]
BASE = "http://127.0.0.1:8766"


class _Rendered(HTMLParser):
    """The tables (each a list of rows of cell texts), the paragraphs' texts, every href and
    src, and every tag seen."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.paragraphs: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        self.links += [attrs[a] for a in ("href", "src") if a in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th", "p"):
            self._text = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._text))
        elif tag == "p":
            self.paragraphs.append("".join(self._text))
        if tag in ("td", "th", "p"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def render(markdown: str) -> _Rendered:
    """The Markdown as HTML, parsed; every link kept, whatever its scheme (file:// when no
    file server runs; a javascript: one must not come out of a title at all)."""
    md = MarkdownIt("commonmark").enable("table")
    md.validateLink = lambda url: True
    html = md.render(markdown)
    rendered = _Rendered()
    rendered.feed(html)
    return rendered


def link(path: Path) -> str:
    return f"{BASE}/{path.name}"


def answers(tmp_path: Path, queries: int, top: int) -> tuple[QueryJobLayout, pd.DataFrame]:
    job = QueryJobLayout(tmp_path / "job")
    (job.root / THUMBS_DIR).mkdir(parents=True)
    rows = []
    for q in range(queries):
        query = f"/uploads/{q:08x}-2b1e-4c55-9f0e-1c1d0a7e5b3c.jpg"
        (job.root / THUMBS_DIR / thumb_name(query)).write_bytes(b"jpeg")
        for rank in range(1, top + 1):
            title = HOSTILE[(q + rank) % len(HOSTILE)]
            rows.append((query, rank, f"SKU-{rank}", 1 - rank / 100, f"p/{rank}.jpg", title))
    return job, pd.DataFrame(
        rows, columns=["query", "rank", "product_id", "score", "image_id", "title"]
    )


def test_titles_and_names_read_as_typed_and_inject_nothing(tmp_path):
    job, table = answers(tmp_path, queries=2, top=MAX_RESULTS)  # every hostile title shows
    assert set(table["title"]) == set(HOSTILE)
    first, second = table["query"].unique()
    names = {first: "red | sneaker <i>1</i>.jpg", second: "[a](javascript:x) #2.jpg"}
    rejected = [{"query": "/uploads/bad.jpg", "reason": "not an image: <b>|</b>"}]
    markdown = results_markdown(job, table, rejected, "**2 queries**", link, names)
    rendered = render(markdown)
    # each query: its name and a link to its photo, then its results in three narrow columns
    queries = [p for p in rendered.paragraphs if p.startswith("Query ")]
    assert queries == [f"Query {names[first]} · photo", f"Query {names[second]} · photo"]
    assert len(rendered.tables) == 2
    for query, (header, *rows) in zip((first, second), rendered.tables, strict=True):
        assert header == ["rank", "product", "score"] and all(len(row) == 3 for row in rows)
        mine = table[table["query"] == query]
        assert rows == [
            [str(rank), f"{sku} · {' '.join(title.split())}", f"{score:.4f}"]
            for rank, sku, title, score in mine[["rank", "product_id", "title", "score"]].values
        ]
    allowed = {"p", "strong", "a", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}
    assert rendered.tags <= allowed
    assert all(href.startswith(BASE + "/") for href in rendered.links), rendered.links
    assert len(rendered.links) == 1 + 2 + 2 * MAX_RESULTS  # the page, the queries, each result
    html = MarkdownIt("commonmark").render(markdown)
    assert "<li>/uploads/bad.jpg: not an image: &lt;b&gt;|&lt;/b&gt;</li>" in html


def test_the_top_results_of_the_first_queries_are_shown(tmp_path):
    job, table = answers(tmp_path, queries=MAX_QUERIES + 3, top=MAX_RESULTS + 5)
    markdown = results_markdown(job, table, [], "heading", link)
    rendered = render(markdown)
    assert len(rendered.tables) == MAX_QUERIES
    for _, *rows in rendered.tables:
        assert [row[0] for row in rows] == [str(r) for r in range(1, MAX_RESULTS + 1)]
    assert f"the top {MAX_RESULTS} of the first {MAX_QUERIES} queries" in markdown
    assert f"[results.html]({BASE}/results.html)" in markdown
    # without a name, a query is its file name
    assert f"Query {Path(table['query'].iloc[0]).name} · photo" in rendered.paragraphs


def test_long_titles_are_cut_and_product_ids_never(tmp_path):
    job, table = answers(tmp_path, queries=1, top=2)
    long_id = "SKU-" + "9" * 80
    table.loc[0, ["product_id", "title"]] = [long_id, "Winter coat " + "with a hood " * 20]
    [(_, first, second)] = [render(results_markdown(job, table, [], "h", link)).tables[0]]
    assert first[1].startswith(f"{long_id} · Winter coat with a hood") and first[1].endswith("…")
    assert len(first[1]) == len(long_id) + 3 + MAX_TITLE
    assert second[1] == f"SKU-2 · {HOSTILE[(0 + 2) % len(HOSTILE)]}"


def test_plain_text_renders_as_typed():
    for text in [*HOSTILE, "\\", "a\\|b", "&#42; &lt;", "1. item", "- item", "# head", ">"]:
        html = MarkdownIt("commonmark").render(plain(text))
        shown = html.removeprefix("<p>").removesuffix("</p>\n")
        for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
            shown = shown.replace(entity, char)
        assert shown == " ".join(text.split()), (text, html)


def test_names_are_keyed_by_the_paths_of_the_query_images(tmp_path):
    folder = tmp_path / "uploads"
    files = [p.resolve() for p in write_good_images(folder, n=2)]
    given = {str(folder / ".." / "uploads" / files[0].name): "red sneaker.jpg"}
    assert query_names(given, files) == {str(files[0]): "red sneaker.jpg"}
    assert query_names(None, files) == {}
    with pytest.raises(UsageError, match="is not one of the query images"):
        query_names({str(tmp_path / "other.jpg"): "x"}, files)
    with pytest.raises(UsageError, match="empty"):
        query_names({str(files[1]): " "}, files)
