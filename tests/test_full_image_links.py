"""Every thumbnail of the report and the query page opens its full image wherever the page is
shown: from disk (file://), through the workspace file server `vasrch serve` runs (the catalog
outside the workspace, as usual), and from a copy of the folder."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urljoin

import pandas as pd
import pytest

from tests.imagefactory import write_good_images
from tests.test_report import catalog, parse
from vasrch.pages.file_server import start_file_server
from vasrch.pages.query_page import write_query_page
from vasrch.pages.report import write_report
from vasrch.search.results import RESULT_COLUMNS

URLISH_IDS = ["http://shop.example/../../../secret.jpg", "../../outside.jpg", "a?b#c%2e.jpg"]


@pytest.fixture
def pages(tmp_path: Path) -> dict:
    """A run report and a query page in a workspace beside (not holding) the catalog, three
    images with URL-like ids; with the file of each image id (a query's: by its file name)."""
    args = catalog(tmp_path / "shop")  # the catalog at shop/catalog, the run at shop/runs/r1
    workspace = tmp_path / "shop" / "ws"
    shutil.move(tmp_path / "shop" / "runs", workspace / "runs")
    paths = dict(args["paths"])
    for odd, image_id in zip(URLISH_IDS, list(paths)[:3], strict=True):
        paths[odd] = paths.pop(image_id)
        args["assignments"].loc[args["assignments"]["image_id"] == image_id, "image_id"] = odd
    args.update(
        out_dir=workspace / "runs" / "r1",
        elbow_png=None,
        paths=paths,
        neighbours=None,
        duplicates=None,
        members_per_cluster=40,
    )
    write_report(**args)
    queries = write_good_images(tmp_path / "uploads", n=2, seed=3)
    rows = [
        (str(q), rank, image_id, 0.9 - 0.1 * rank, image_id, path)
        for q in queries
        for rank, (image_id, path) in enumerate(list(paths.items())[:4], start=1)
    ]
    table = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "path"])
    write_query_page(workspace / "queries" / "j1", table, [], "2 queries")
    paths |= {q.name: str(q) for q in queries}
    return {"workspace": workspace, "catalog": tmp_path / "shop" / "catalog", "paths": paths}


def linked(page: Path) -> list[tuple[str, str]]:
    """(image id, href) of every thumbnail linked to its full image."""
    tags = parse(page.read_text(encoding="utf-8"))
    return [
        (img["alt"], href)
        for img, href in zip(tags.imgs, tags.img_links, strict=True)
        if href is not None
    ]


def all_pages(workspace: Path) -> list[Path]:
    return [
        workspace / "runs" / "r1" / "report.html",
        workspace / "queries" / "j1" / "results.html",
    ]


@pytest.fixture
def files(pages) -> Iterator[str]:
    server = start_file_server(pages["workspace"], "127.0.0.1", 0, catalog=pages["catalog"])
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def opened(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_links_open_from_disk(pages):
    shown = set()
    for page in all_pages(pages["workspace"]):
        links = linked(page)
        assert len(links) >= 10
        for image_id, href in links:
            assert ".." not in href and not href.startswith("/") and ":" not in href, href
            original = Path(pages["paths"][image_id]).read_bytes()
            assert (page.parent / unquote(href)).read_bytes() == original, image_id
            shown.add(image_id)
    assert shown >= set(URLISH_IDS)


def test_links_open_through_the_file_server(pages, files):
    workspace = pages["workspace"]
    for page in all_pages(workspace):
        url = f"{files}/{page.relative_to(workspace).as_posix()}"
        assert opened(url) == page.read_bytes()
        for image_id, href in linked(page):
            assert opened(urljoin(url, href)) == (page.parent / unquote(href)).read_bytes(), (
                image_id
            )


def test_links_open_from_copies(pages, tmp_path):
    workspace = pages["workspace"]
    kept = tmp_path / "cp"
    subprocess.run(["cp", "-r", str(workspace), str(kept)], check=True)
    taken = shutil.copytree(workspace, tmp_path / "copytree")
    expected = {
        page.relative_to(workspace): {
            href: (page.parent / unquote(href)).read_bytes() for _, href in linked(page)
        }
        for page in all_pages(workspace)
    }
    for page in all_pages(kept):  # symlinks kept: the originals open while they are there
        for href, data in expected[page.relative_to(kept)].items():
            assert (page.parent / unquote(href)).read_bytes() == data
    shutil.rmtree(pages["catalog"])
    for page in all_pages(taken):  # symlinks followed: the copy holds the images it shows
        for href, data in expected[page.relative_to(taken)].items():
            assert (page.parent / unquote(href)).read_bytes() == data
