"""A test's HTTP server run in a daemon thread while a block runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer


@contextlib.contextmanager
def served_in_thread(server: ThreadingHTTPServer) -> Iterator[str]:
    """Serve `server` (bound to loopback) until the block ends; yields its http:// address."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
