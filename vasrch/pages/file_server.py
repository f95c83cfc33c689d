"""A read-only HTTP view of a workspace, so links in the Prefect UI (reports, plots, query
pages, bulk outputs) open in a browser; `vasrch serve` runs it beside the deployments.

It serves regular files inside the workspace and nothing else: no folder listings, no dotfiles
(`.lock`, staging folders), no `query-service.json` or `hidden-products.json` records, no
symlink out of the workspace but those to image files inside the catalog folder (the full
images that pages link to, vasrch.pages.thumbnails). On loopback it answers only requests whose
Host header names this machine (a web page cannot read the workspace through DNS rebinding).
Beyond loopback it needs a token, as the query service does: `Authorization: Bearer <token>`,
or HTTP Basic with the token as password so that a browser following a link asks for it once.
"""

from __future__ import annotations

import base64
import hmac
import mimetypes
import os
import stat
import threading
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from vasrch.addresses import is_loopback, is_loopback_host_header
from vasrch.catalog.images import IMAGE_EXTENSIONS
from vasrch.layout import WorkspaceLayout

# Set by `vasrch serve` for the flow runs it executes: the server's base URL and the folder it
# shows; links to files under that folder then point at the server instead of file://.
FILES_URL_ENV = "VASRCH_FILES_URL"
FILES_ROOT_ENV = "VASRCH_FILES_ROOT"
_CHUNK = 1 << 16


class PublicWithoutToken(ValueError):
    """The file server was asked to listen beyond loopback with no token to ask for."""


def _private_names(root: Path) -> frozenset[str]:
    """Top-level workspace files that describe the machine, not pages: never served."""
    layout = WorkspaceLayout(root)
    return frozenset({layout.query_service.name, layout.hidden_products.name})


class _WorkspaceFiles(BaseHTTPRequestHandler):
    """GET and HEAD of regular files under `root`; everything else is refused."""

    root: str
    catalog: str | None
    token: str | None
    check_host: bool
    private: frozenset[str]

    def log_message(self, format: str, *args: object) -> None:
        """Drop per-request logs (the deployments' logs stay readable)."""

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        if self.check_host and not is_loopback_host_header(
            self.headers.get("Host"), self.server.server_address[1]
        ):
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "Host is not this machine")
            return
        if self.token is not None and not self._authorised():
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Basic realm="vasrch workspace"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self._file_path()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            self.send_response(HTTPStatus.OK)
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(info.st_size))
            self.send_header("Last-Modified", formatdate(info.st_mtime, usegmt=True))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            while body and (chunk := file.read(_CHUNK)):
                self.wfile.write(chunk)

    def _authorised(self) -> bool:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        given = value.strip()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).decode().partition(":")[2]
            except ValueError:
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.encode(), str(self.token).encode())

    def _file_path(self) -> str | None:
        """The real path of the requested file, or None when it must not be served."""
        parts = [p for p in unquote(urlsplit(self.path).path).split("/") if p]
        if not parts or any(p.startswith(".") or "\x00" in p for p in parts):
            return None
        if len(parts) == 1 and parts[0] in self.private:
            return None
        real = os.path.realpath(os.path.join(self.root, *parts))
        shown = _within(real, self.root) or (
            self.catalog is not None
            and _within(real, self.catalog)
            and os.path.splitext(real)[1].lower() in IMAGE_EXTENSIONS
        )
        return real if shown and os.path.isfile(real) else None


def _within(real: str, top: str) -> bool:
    """Whether the real path `real` lies inside the folder `top`, through no hidden entry."""
    inside = os.path.relpath(real, top).split(os.sep)
    return inside[0] != ".." and not any(p.startswith(".") for p in inside)


def start_file_server(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    allow_public: bool = False,
    catalog: Path | None = None,
) -> ThreadingHTTPServer:
    """Serve `root` read-only on host:port (0: a free port) from a daemon thread, and point
    FILES_URL_ENV / FILES_ROOT_ENV at it; `shutdown()` stops it. Symlinks under `root` to image
    files inside the `catalog` folder are served too. Beyond loopback a `token` is required
    unless `allow_public` (e.g. behind an authenticating proxy)."""
    loopback = is_loopback(host)
    if not loopback and not token and not allow_public:
        raise PublicWithoutToken(
            f"--files-host {host} would publish the workspace beyond this machine, and no "
            "token is set: set VASRCH_TOKEN so that the file server asks for it, or pass "
            "--allow-public to serve without one (e.g. behind a proxy that authenticates)"
        )
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    handler = type(
        "WorkspaceFiles",
        (_WorkspaceFiles,),
        {
            "root": str(root),
            "catalog": None if catalog is None else os.path.realpath(catalog),
            "token": token or None,
            "check_host": loopback,
            "private": _private_names(root),
        },
    )
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="vasrch-files", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    os.environ[FILES_URL_ENV] = f"http://{bound_host}:{bound_port}"
    os.environ[FILES_ROOT_ENV] = str(root)
    return server


def link_to(path: Path) -> str:
    """A URL that opens `path`: on the workspace file server when one serves it, else file://."""
    path = Path(path).resolve()
    base, root = os.environ.get(FILES_URL_ENV), os.environ.get(FILES_ROOT_ENV)
    if base and root and path.is_relative_to(root):
        return f"{base}/{quote(path.relative_to(root).as_posix())}"
    return path.as_uri()
