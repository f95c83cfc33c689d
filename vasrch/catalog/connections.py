"""Kept-alive HTTP(S) connections for downloads: a GET takes an idle connection to its host (or
opens one) and gives it back only when its answer was read to the end and the server keeps the
connection open; a connection that failed in any way is closed, never reused.

At most MAX_IDLE connections wait, each at most IDLE_S (the oldest is closed first), so a pool of
download threads keeps about one per thread and host. A waiting connection the server closed
meanwhile is found readable and dropped when taken; one the server closes just as a request is
sent fails before any answer and the request is sent once more on a new connection. A forked
child closes its copies of the parent's connections. Proxies come from the environment as
urllib reads them on Linux (http_proxy, https_proxy, no_proxy): plain HTTP through the proxy,
HTTPS through a CONNECT tunnel.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import os
import select
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

MAX_IDLE = 256  # catalog.download_workers allows up to 256 threads, each keeping one
IDLE_S = 30.0
DRAINED_BYTES = 1 << 16  # a non-photo answer (304, 404, 503, a redirect) up to this is read
_PORTS = {"http": 80, "https": 443}

Key = tuple[str, str, int, str]  # scheme, host, port, proxy URL ("" without one)


@dataclass(frozen=True)
class Route:
    """Where a URL's request goes: the pool key, the request target and the headers the proxy
    needs (Proxy-Authorization for plain HTTP through a proxy with credentials)."""

    key: Key
    target: str
    headers: dict[str, str] = field(default_factory=dict)


_idle: list[tuple[Key, http.client.HTTPConnection, float]] = []
_idle_lock = threading.Lock()


def route(url: str) -> Route:
    """How `url` (http:// or https://) is requested; ValueError for a URL without a host or
    with a bad port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _PORTS or not host:
        raise ValueError(f"not an http(s) URL: {url}")
    port = parts.port or _PORTS[scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy(scheme, host)
    if not proxy:
        return Route((scheme, host, port, ""), target)
    if scheme == "https":
        return Route((scheme, host, port, proxy), target)
    return Route((scheme, host, port, proxy), url.split("#", 1)[0], _proxy_auth(proxy))


def _proxy(scheme: str, host: str) -> str:
    """The proxy for `scheme` to `host` from the environment ("" for none), read as urllib reads
    it (lower-case names first, no_proxy honoured) without walking every variable per request."""
    env = os.environ
    proxy = env.get(f"{scheme}_proxy", env.get(f"{scheme.upper()}_PROXY", ""))
    if not proxy:
        return ""
    bypass = env.get("no_proxy", env.get("NO_PROXY", ""))
    return "" if urllib.request.proxy_bypass_environment(host, {"no": bypass}) else proxy


def _proxy_url(proxy: str) -> SplitResult:
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _proxy_auth(proxy: str) -> dict[str, str]:
    parts = _proxy_url(proxy)
    if parts.username is None:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def _connect(key: Key, timeout_s: float) -> http.client.HTTPConnection:
    """A new (not yet connected) connection for `key`."""
    scheme, host, port, proxy = key
    if not proxy:
        kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return kind(host, port, timeout=timeout_s)
    parts = _proxy_url(proxy)
    via = (parts.hostname or "", parts.port or 80)
    if scheme == "http":
        return http.client.HTTPConnection(*via, timeout=timeout_s)
    conn = http.client.HTTPSConnection(*via, timeout=timeout_s)
    conn.set_tunnel(host, port, headers=_proxy_auth(proxy))
    return conn


def _readable(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection has something to read: the server closed it (or sent what
    no request asked for); either way it cannot take the next request."""
    sock = conn.sock
    if sock is None:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


def _expire(now: float) -> None:
    """Close the connections idle longer than IDLE_S and the oldest past MAX_IDLE (lock held)."""
    while _idle and (len(_idle) > MAX_IDLE or now - _idle[0][2] > IDLE_S):
        _idle.pop(0)[1].close()


def _take(key: Key) -> http.client.HTTPConnection | None:
    """The connection to `key` that waited least, still open; None when there is none."""
    while True:
        with _idle_lock:
            _expire(time.monotonic())
            found = next((i for i in range(len(_idle) - 1, -1, -1) if _idle[i][0] == key), None)
            if found is None:
                return None
            conn = _idle.pop(found)[1]
        if not _readable(conn):
            return conn
        conn.close()


def _send(
    conn: http.client.HTTPConnection, how: Route, headers: dict[str, str], timeout_s: float
) -> http.client.HTTPResponse:
    conn.timeout = timeout_s
    if conn.sock is not None:
        conn.sock.settimeout(timeout_s)
    conn.request("GET", how.target, headers={**headers, **how.headers})
    return conn.getresponse()


def get(
    url: str, headers: dict[str, str], timeout_s: float
) -> tuple[Route, http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send GET `url` on a kept-alive connection and read the answer's head: (its route, the
    connection, the response). Hand both to `finish` or `drop` once done; on an error the
    connection is closed already."""
    how = route(url)
    conn = _take(how.key)
    if conn is not None:
        try:
            return how, conn, _send(conn, how, headers, timeout_s)
        except TimeoutError:
            conn.close()  # a slow server: a new connection would not be faster
            raise
        except (OSError, http.client.HTTPException):
            conn.close()  # closed by the server as the request left: once more on a new one
        except BaseException:
            conn.close()
            raise
    conn = _connect(how.key, timeout_s)
    try:
        return how, conn, _send(conn, how, headers, timeout_s)
    except BaseException:
        conn.close()
        raise


def drain(response: http.client.HTTPResponse) -> None:
    """Read a short answer's body (up to DRAINED_BYTES) so its connection can serve again."""
    if response.length is not None and response.length <= DRAINED_BYTES:
        response.read()


def finish(
    how: Route, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
) -> None:
    """Keep the connection for the next GET to its host when `response` was read to its end and
    the server keeps it open; close it otherwise."""
    if not response.isclosed() or response.will_close or conn.sock is None:
        drop(conn, response)
        return
    with _idle_lock:
        _idle.append((how.key, conn, time.monotonic()))
        _expire(time.monotonic())


def drop(conn: http.client.HTTPConnection, response: http.client.HTTPResponse | None) -> None:
    """Close a connection (and its response) that must not serve again."""
    if response is not None:
        response.close()
    conn.close()


def _forget_after_fork() -> None:
    """In a forked child: close its copies of the parent's connections (never shared)."""
    global _idle_lock
    _idle_lock = threading.Lock()
    while _idle:
        _idle.pop()[1].close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def close_idle() -> int:
    """Close every waiting connection; how many there were."""
    with _idle_lock:
        closed = len(_idle)
        while _idle:
            _idle.pop()[1].close()
    return closed


atexit.register(close_idle)  # closed, not left to the interpreter's teardown
