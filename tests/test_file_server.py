"""The workspace file server `vasrch serve` runs: regular files inside the workspace only, no
listings, dotfiles, records or symlink escapes, Host checked on loopback, a token beyond it."""

from __future__ import annotations

import base64
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vasrch.pages.file_server import PublicWithoutToken, start_file_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    workspace = tmp_path / "ws"
    (workspace / "runs" / "r1").mkdir(parents=True)
    (workspace / "runs" / "r1" / "report.html").write_text("<p>report</p>")
    (workspace / ".lock").write_text('{"pid": 1}')
    (workspace / "query-service.json").write_text('{"url": "http://127.0.0.1:1"}')
    (workspace / "runs" / ".staging-r2").mkdir()
    (workspace / "runs" / ".staging-r2" / "x.html").write_text("half")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (workspace / "runs" / "leak.txt").symlink_to(secret)
    (workspace / "runs" / "inside.html").symlink_to(workspace / "runs" / "r1" / "report.html")
    os.mkfifo(workspace / "runs" / "pipe")
    server = start_file_server(workspace, "127.0.0.1", 0)
    try:
        yield workspace, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, path: str, host: str | None = None, auth: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    if auth:
        conn.putheader("Authorization", auth)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_pages_are_served_and_nothing_else(served) -> None:
    _, port = served
    assert get(port, "/runs/r1/report.html") == (200, b"<p>report</p>")
    assert get(port, "/runs/inside.html")[0] == 200  # a symlink within the workspace
    for path in (
        "/",  # no listing
        "/runs/",
        "/runs/r1",
        "/.lock",  # dotfiles
        "/runs/.staging-r2/x.html",
        "/query-service.json",  # the service's record
        "/runs/leak.txt",  # symlink out of the workspace
        "/runs/%2e%2e/%2e%2e/secret.txt",
        "/../secret.txt",
        "/runs/pipe",  # never blocks on a FIFO
        "/runs/r1/absent.html",
    ):
        status, body = get(port, path)
        assert status == 404, (path, status)
        assert b"private" not in body and b"pid" not in body


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "attacker.test", ""])
def test_a_host_header_that_is_not_this_machine_is_refused(served, host: str) -> None:
    _, port = served
    assert get(port, "/runs/r1/report.html", host=host.format(port=port))[0] == 421


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "localhost"])
def test_loopback_names_are_accepted(served, host: str) -> None:
    _, port = served
    assert get(port, "/runs/r1/report.html", host=host.format(port=port))[0] == 200


def test_beyond_loopback_a_token_is_needed(tmp_path: Path) -> None:
    with pytest.raises(PublicWithoutToken, match="VASRCH_TOKEN"):
        start_file_server(tmp_path, "0.0.0.0", 0)
    (tmp_path / "page.html").write_text("page")
    server = start_file_server(tmp_path, "0.0.0.0", 0, token="s3cret")
    port = server.server_address[1]
    try:
        assert get(port, "/page.html", host="shop.example")[0] == 401
        assert get(port, "/page.html", auth="Bearer wrong")[0] == 401
        assert get(port, "/page.html", auth="Bearer s3cret") == (200, b"page")
        basic = base64.b64encode(b"anyone:s3cret").decode()
        assert get(port, "/page.html", host="shop.example", auth=f"Basic {basic}")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_symlinks_into_the_catalog_serve_its_images_and_nothing_else(tmp_path: Path) -> None:
    catalog, workspace, outside = tmp_path / "catalog", tmp_path / "ws", tmp_path / "outside"
    for folder in (catalog / ".hidden", workspace / "runs" / "r1" / "images", outside):
        folder.mkdir(parents=True)
    (catalog / "shoe.jpg").write_bytes(b"shoe pixels")
    (catalog / "prices.csv").write_text("private prices")
    (catalog / ".hidden" / "draft.jpg").write_bytes(b"private draft")
    (outside / "secret.jpg").write_bytes(b"private secret")
    (catalog / "escape.jpg").symlink_to(outside / "secret.jpg")  # a catalog link leading out
    links = workspace / "runs" / "r1" / "images"
    targets = {
        "shoe.jpg": catalog / "shoe.jpg",
        "prices.jpg": catalog / "prices.csv",
        "draft.jpg": catalog / ".hidden" / "draft.jpg",
        "escape.jpg": catalog / "escape.jpg",
        "secret.jpg": outside / "secret.jpg",
        "up.jpg": Path(f"{catalog}/../outside/secret.jpg"),
    }
    for name, target in targets.items():
        (links / name).symlink_to(target)
    (workspace / "catalog").symlink_to(catalog)  # the catalog folder itself, linked
    for served_catalog in (catalog, Path(f"{workspace}/catalog")):
        server = start_file_server(workspace, "127.0.0.1", 0, catalog=served_catalog)
        port = server.server_address[1]
        try:
            assert get(port, "/runs/r1/images/shoe.jpg") == (200, b"shoe pixels")
            assert get(port, "/catalog/shoe.jpg") == (200, b"shoe pixels")
            for path in (
                *(f"/runs/r1/images/{name}" for name in targets if name != "shoe.jpg"),
                "/catalog/prices.csv",  # not an image
                "/catalog/.hidden/draft.jpg",
                "/catalog/escape.jpg",
                "/catalog/",
                "/catalog/%2e%2e/outside/secret.jpg",
                "/runs/r1/images/%2e%2e%2f%2e%2e%2f%2e%2e%2fcatalog/shoe.jpg",
            ):
                status, body = get(port, path)
                assert status == 404 and b"private" not in body, (path, status)
        finally:
            server.shutdown()
            server.server_close()
    without = start_file_server(workspace, "127.0.0.1", 0)  # no catalog: no symlink out
    try:
        assert get(without.server_address[1], "/runs/r1/images/shoe.jpg")[0] == 404
    finally:
        without.shutdown()
        without.server_close()
