"""Downloads over kept-alive connections, against real servers on loopback (tests/feed_server.py):
photos from one host share connections (HTTP and HTTPS), a connection that failed is never
reused, one the server closed is replaced without costing a retry, proxies from the
environment are used, a forked child leaves the parent's connections alone."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.feed_server import FeedServer, feed_server, photos_of
from tests.http_threads import served_in_thread
from vasrch.catalog.connections import close_idle
from vasrch.catalog.downloads import FetchError, FetchPolicy, fetch_url
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.catalog.sources import Fetching

MAX_BYTES = 8_000_000
# No retries: a replaced connection must not need one. Short waits: /slow/ answers after 3 s.
POLICY = FetchPolicy(timeout_s=1.0, retries=0)
RETRYING = FetchPolicy(timeout_s=1.0, retries=2, backoff_s=0.05)


@pytest.fixture
def photos(demo_catalog: Path) -> dict[str, bytes]:
    return photos_of(demo_catalog, 12)


@pytest.fixture
def feed(photos: dict[str, bytes]) -> Iterator[FeedServer]:
    close_idle()  # no connection left from an earlier test
    with feed_server(photos) as server:
        yield server
    close_idle()


def _get(feed: FeedServer, kind: str, name: str, policy: FetchPolicy = POLICY) -> bytes | None:
    return fetch_url(feed.url(kind, name), MAX_BYTES, policy).data


def test_photos_from_one_host_share_one_connection_per_thread(feed, tmp_path: Path) -> None:
    names = sorted(feed.photos)
    assert all(_get(feed, "ok", n) == feed.photos[n] for n in names)
    assert len(feed.connections) == 1
    # a scan's download threads: at most one connection each
    manifest = tmp_path / "feed.csv"
    rows = [f"p{i},{feed.url('ok', n)}" for i, n in enumerate(names)]
    manifest.write_text("product_id,image\n" + "\n".join(rows) + "\n")
    close_idle()
    options = ScanOptions(MAX_BYTES, manifest=manifest, fetching=Fetching(workers=3, policy=POLICY))
    scan = scan_catalog(tmp_path, options=options)
    expected = {feed.url("ok", n): hashlib.sha256(feed.photos[n]).hexdigest() for n in names}
    assert dict(zip(scan.table["image_id"], scan.table["sha256"], strict=True)) == expected
    assert len(feed.connections) <= 1 + 3 < 1 + len(names)
    assert close_idle() == 0  # the scan closed its threads' connections when they were done


@pytest.mark.parametrize("kind", ["closed", "stale"])
def test_a_connection_the_server_closed_is_replaced_without_a_retry(feed, kind: str) -> None:
    first, second = sorted(feed.photos)[:2]
    assert _get(feed, kind, first) == feed.photos[first]
    assert _get(feed, "ok", second) == feed.photos[second]  # POLICY retries nothing
    assert len(feed.connections) == 2


@pytest.mark.parametrize(
    ("kind", "reason", "reused"),
    [
        ("missing", "HTTP 404", True),
        ("forbidden", "HTTP 403", True),
        ("slow", "timed out", False),  # its late answer must not be read as the next photo's
        ("cut", "connection closed mid-body", False),
        ("huge", "file too large", False),
    ],
)
def test_a_failed_download_keeps_its_connection_only_when_the_answer_was_whole(
    feed, kind: str, reason: str, reused: bool
) -> None:
    first, second = sorted(feed.photos)[:2]
    with pytest.raises(FetchError, match=reason):
        _get(feed, kind, first)
    assert _get(feed, "ok", second) == feed.photos[second]
    assert len(feed.connections) == (1 if reused else 2)


def test_retried_statuses_are_read_and_retried_on_the_same_connection(feed) -> None:
    first, second = sorted(feed.photos)[:2]
    assert _get(feed, "503", first, RETRYING) == feed.photos[first]
    assert feed.requests[f"/503/{first}"] == 3  # two 503s (Retry-After: 0), then the photo
    assert _get(feed, "ok", second) == feed.photos[second]
    assert len(feed.connections) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl command line makes it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [*command, "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_photos_share_a_connection_and_an_untrusted_certificate_fails(
    photos: dict[str, bytes], certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    close_idle()
    names = sorted(photos)
    with feed_server(photos, tls=certificate) as feed:
        with pytest.raises(FetchError, match="TLS error"):
            _get(feed, "ok", names[0])
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # now trusted
        assert all(_get(feed, "ok", n) == photos[n] for n in names)
        assert len(feed.connections) == 1  # the refused handshake never became one
        assert _get(feed, "stale", names[0]) == photos[names[0]]
        assert _get(feed, "ok", names[1]) == photos[names[1]]  # POLICY retries nothing
        assert len(feed.connections) == 2
        close_idle()


@pytest.fixture
def proxy() -> Iterator[list[str]]:
    """A forwarding HTTP proxy on loopback; yields the request targets it was sent."""
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            target = urlsplit(self.path)
            upstream = http.client.HTTPConnection(target.netloc, timeout=5)
            upstream.request("GET", target.path)
            body = upstream.getresponse().read()
            upstream.close()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    with served_in_thread(server) as address:
        seen.append(address)
        yield seen


def test_a_proxy_from_the_environment_carries_the_downloads(
    feed, proxy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = proxy.pop(0)
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", address)
    names = sorted(feed.photos)[:3]
    assert all(_get(feed, "ok", n) == feed.photos[n] for n in names)
    assert proxy == [feed.url("ok", n) for n in names]  # absolute URLs, as a proxy takes them
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert _get(feed, "ok", names[0]) == feed.photos[names[0]]
    assert len(proxy) == len(names)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_closes_its_copies_of_the_parents_connections(feed) -> None:
    name = sorted(feed.photos)[0]
    assert _get(feed, "ok", name) == feed.photos[name]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing left to reuse
        os.write(write, str(close_idle()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"0"
    assert _get(feed, "ok", name) == feed.photos[name]
    assert len(feed.connections) == 1  # the parent's connection still serves it
