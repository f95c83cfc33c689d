import shutil
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pandas as pd
import pytest
from PIL import Image

from tests.imagefactory import write_bad_images, write_good_images
from tests.test_report import ODD_ID, catalog
from vasrch.catalog.images import decode_image
from vasrch.pages import rendering
from vasrch.pages.query_page import write_query_page
from vasrch.pages.report import write_report
from vasrch.pages.thumbnails import PLACEHOLDER_NAME, thumb_name
from vasrch.search.results import RESULT_COLUMNS


class _Page(HTMLParser):
    """The figures of each grid, the table rows, the headings and the inline stylesheet."""

    def __init__(self):
        super().__init__()
        self.grids: list[list[dict]] = []
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self.styles: list[str] = []
        self._figure: dict | None = None
        self._open: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "grid":
            self.grids.append([])
        elif tag == "figure":
            self._figure = {"classes": attrs["class"].split(), "notes": []}
            self.grids[-1].append(self._figure)
        elif tag == "img" and self._figure is not None:
            self._figure.update(src=attrs["src"], alt=attrs["alt"], title=attrs["title"])
        elif tag == "tr":
            self.rows.append([])
        if tag in ("td", "h1", "h2", "style") or (tag == "span" and attrs.get("class") == "val"):
            self._open, self._text = tag, []

    def handle_data(self, data):
        self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        if tag != self._open:
            return
        text = "".join(self._text)
        if tag == "span":
            self._figure["notes"].append(text)
        elif tag == "td":
            self.rows[-1].append(text)
        elif tag == "style":
            self.styles.append(text)
        else:
            self.headings.append(text)
        self._open = None


def parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    return parsed


def results(tmp_path: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Two real query images, each with three neighbours (by rank) in a real catalog that holds
    an odd id and an undecodable file, as the search returns them."""
    catalog_dir = tmp_path / "catalog"
    images = write_good_images(catalog_dir, n=8)[2:]
    images[1] = images[1].rename(catalog_dir / ODD_ID)
    bad = next(p for p in write_bad_images(catalog_dir) if p.name == "truncated.jpg")
    queries = write_good_images(tmp_path / "queries", n=2, seed=1)
    neighbours = [[images[0], images[1], bad], [images[4], images[3], images[2]]]
    rows = [
        (str(query), rank, path.name, 0.95 - 0.1 * rank, path.name, str(path))
        for query, found in zip(queries, neighbours, strict=True)
        for rank, path in enumerate(found, start=1)
    ]
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "path"]), queries


def test_each_query_comes_first_then_its_neighbours_in_rank_order(tmp_path):
    table, queries = results(tmp_path)
    page = write_query_page(tmp_path / "out", table, [], "2 queries")
    assert page == tmp_path / "out" / "results.html"
    parsed = parse(page.read_text(encoding="utf-8"))
    assert parsed.headings == ["2 queries"]
    assert len(parsed.grids) == 2
    for query, (head, *found) in zip(queries, parsed.grids, strict=True):
        assert head["alt"] == query.name and head["notes"] == ["query"]
        assert head["classes"] == ["tile", "query"]
        assert head["src"] == f"thumbs/{thumb_name(str(query))}"
        expected = table[table["query"] == str(query)].sort_values("rank")
        assert [figure["alt"] for figure in found] == expected["image_id"].tolist()
        assert [figure["notes"][0] for figure in found] == [
            f"#{row.rank} · score {row.score:.3f}" for row in expected.itertuples(index=False)
        ]
    assert not parsed.rows


def test_thumbnails_lie_beside_the_page_and_every_link_is_relative(tmp_path):
    table, _ = results(tmp_path / "origin")
    write_query_page(tmp_path / "origin" / "out", table, [], "t")
    copy = shutil.copytree(tmp_path / "origin" / "out", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "origin")  # the queries and the catalog are gone
    html = (copy / "results.html").read_text(encoding="utf-8")
    figures = [figure for grid in parse(html).grids for figure in grid]
    assert len(figures) == 8
    for figure in figures:
        assert figure["src"].startswith("thumbs/")
        with Image.open(copy / figure["src"]) as im:
            assert im.format == "JPEG" and max(im.size) <= 128
    unreadable = [f for f in figures if "unreadable" in f["notes"]]
    assert [f["alt"] for f in unreadable] == ["truncated.jpg"]
    assert unreadable[0]["src"] == f"thumbs/{PLACEHOLDER_NAME}"
    assert "truncated" in unreadable[0]["title"] and "bad" in unreadable[0]["classes"]
    assert str(tmp_path) not in html and 'src="/' not in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_odd_ids_titles_and_reasons_are_escaped(tmp_path):
    table, _ = results(tmp_path)
    rejected = [{"query": str(tmp_path / "<b>.jpg"), "reason": "not an image: <b>x</b> & co"}]
    title = "<script>alert(1)</script> & co"
    page = write_query_page(tmp_path / "out", table, rejected, title)
    html = page.read_text(encoding="utf-8")
    assert "<b>" not in html and "<script>" not in html and ODD_ID not in html
    parsed = parse(html)
    assert parsed.headings[0] == title
    odd = [figure for grid in parsed.grids for figure in grid if figure["alt"] == ODD_ID]
    assert len(odd) == 1 and odd[0]["src"] == f"thumbs/{thumb_name(ODD_ID)}"
    assert (tmp_path / "out" / odd[0]["src"]).is_file()
    assert parsed.rows == [[rejected[0]["query"], rejected[0]["reason"]]]


def test_rejected_queries_are_listed_with_their_reason(tmp_path):
    table, _ = results(tmp_path)
    bad = write_bad_images(tmp_path / "rejected")
    rejected = [{"query": str(path), "reason": decode_image(path).reason} for path in bad]
    parsed = parse(write_query_page(tmp_path / "out", table, rejected, "t").read_text("utf-8"))
    assert len(parsed.grids) == 2
    assert parsed.headings[-1] == "Queries that could not be read"
    assert parsed.rows == [[r["query"], r["reason"]] for r in rejected]
    for (_, reason), fragment in zip(parsed.rows, bad.values(), strict=True):
        assert fragment in reason


def test_a_page_with_every_query_rejected_lists_them_alone(tmp_path):
    rejected = [{"query": "/q/a.jpg", "reason": "empty file (0 bytes)"}]
    empty = pd.DataFrame(columns=[*RESULT_COLUMNS, "path"])
    parsed = parse(write_query_page(tmp_path / "out", empty, rejected, "t").read_text("utf-8"))
    assert parsed.grids == [] and parsed.rows == [["/q/a.jpg", "empty file (0 bytes)"]]


def test_report_and_query_page_share_one_stylesheet(tmp_path):
    report = write_report(**catalog(tmp_path / "run"), sample_clusters=1, sample_queries=1)
    table, _ = results(tmp_path / "query")
    query_page = write_query_page(tmp_path / "out", table, [], "t")
    (report_css,) = parse(report.read_text(encoding="utf-8")).styles
    (query_css,) = parse(query_page.read_text(encoding="utf-8")).styles
    assert report_css == query_css
    assert report_css.strip() == rendering.stylesheet().strip()
    assert "figure.tile" in report_css and '"Segoe UI"' in report_css


def test_a_missing_template_value_is_an_error_not_a_blank(tmp_path):
    with pytest.raises(jinja2.UndefinedError, match="queries"):
        rendering.render("query.html.j2", title="t", rejected=[], thumbs={})
