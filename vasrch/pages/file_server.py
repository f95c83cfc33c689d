"""A read-only HTTP view of a workspace, so links in the Prefect UI (reports, plots, query
pages, bulk outputs) open in a browser; `vasrch serve` runs it beside the deployments."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

# Set by `vasrch serve` for the flow runs it executes: the server's base URL and the folder it
# shows; links to files under that folder then point at the server instead of file://.
FILES_URL_ENV = "VASRCH_FILES_URL"
FILES_ROOT_ENV = "VASRCH_FILES_ROOT"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without writing an access line per request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        """Drop per-request logs (the deployments' logs stay readable)."""


def start_file_server(root: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve `root` read-only on host:port (0: a free port) from a daemon thread, and point
    FILES_URL_ENV / FILES_ROOT_ENV at it; `shutdown()` stops it."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(root))
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
