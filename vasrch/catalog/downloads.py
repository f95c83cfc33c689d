"""Photos fetched over HTTP(S): size-capped while streaming, timed, retried, rate limited per
host, and conditional on a later run (If-None-Match / If-Modified-Since).

Rules (README, "Catalogs in object storage and URL feeds", shows them to users):

- A response is read in chunks and dropped as soon as it passes the byte cap (a Content-Length
  over the cap is refused before the body is read); nothing is written to disk here.
- `timeout_s` bounds each wait for the server (connecting, each read); a whole download may take
  at most `DEADLINE_FACTOR` times that, so a server trickling bytes cannot hold a worker forever.
- 429 and 5xx answers, timeouts and connections closed mid-body are retried `retries` times
  with exponential backoff, honouring `Retry-After` (seconds or an HTTP date, capped at
  `MAX_RETRY_AFTER_S`); anything else (404, 403, a TLS error, too large) fails at once.
- Every failure is a FetchError (an OSError) whose message says why, with the HTTP status.
- Requests go over kept-alive connections (vasrch.catalog.connections: one a thread and host,
  a broken one never reused) and follow up to MAX_REDIRECTS redirects.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from vasrch.catalog import connections

DEADLINE_FACTOR = 10
MAX_RETRY_AFTER_S = 60.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
_CHUNK = 1 << 16
_USER_AGENT = "vasrch (product image search; catalog photos)"


@dataclass(frozen=True)
class FetchPolicy:
    """How photos are fetched: seconds a wait may last, retries of a transient failure, the
    first backoff (doubled each retry) and the most requests a second to one host (None: no
    limit)."""

    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    host_rate: float | None = None


@dataclass(frozen=True)
class Fetched:
    """A fetched photo: its bytes (None when the server says it has not changed: 304) and the
    validators to send next time."""

    data: bytes | None
    etag: str
    last_modified: str


class FetchError(OSError):
    """A photo that could not be fetched; the message says why."""


class _Transient(Exception):
    """A failure worth retrying, with the wait the server asked for (None: back off)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


_turns: dict[str, float] = {}
_turns_lock = threading.Lock()


def _wait_turn(host: str, rate: float | None) -> None:
    """Sleep until `host` may take one more request at `rate` requests a second."""
    if not rate:
        return
    with _turns_lock:
        now = time.monotonic()
        start = max(now, _turns.get(host, now))
        _turns[host] = start + 1.0 / rate
    if start > now:
        time.sleep(start - now)


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date), capped at
    MAX_RETRY_AFTER_S; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    wait = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return min(max(0.0, wait), MAX_RETRY_AFTER_S)


def fetch_url(
    url: str,
    max_bytes: int | None,
    policy: FetchPolicy,
    etag: str = "",
    last_modified: str = "",
) -> Fetched:
    """GET `url` under `policy`, conditional on `etag` / `last_modified` when given; FetchError
    says why it failed after the retries."""
    host = urlsplit(url).netloc
    for attempt in range(policy.retries + 1):
        _wait_turn(host, policy.host_rate)
        try:
            return _attempt(url, max_bytes, policy.timeout_s, etag, last_modified)
        except _Transient as err:
            if attempt == policy.retries:
                raise FetchError(f"{err} (after {attempt + 1} tries)") from None
            time.sleep(err.wait if err.wait is not None else policy.backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _attempt(
    url: str, max_bytes: int | None, timeout_s: float, etag: str, last_modified: str
) -> Fetched:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    for _ in range(MAX_REDIRECTS + 1):
        how, conn, response = _opened(url, headers, timeout_s)
        ok = 200 <= response.status < 300
        try:
            if ok:
                deadline = time.monotonic() + DEADLINE_FACTOR * timeout_s
                data = _read_capped(response, max_bytes, deadline)
            else:
                connections.drain(response)
        except BaseException:
            connections.drop(conn, response)
            raise
        connections.finish(how, conn, response)
        location = response.headers.get("Location")
        if ok:
            return Fetched(
                data, response.headers.get("ETag", ""), response.headers.get("Last-Modified", "")
            )
        if response.status in REDIRECTS and location:
            url = urljoin(url, location)
            continue
        return _not_ok(response, etag, last_modified)
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _opened(
    url: str, headers: dict[str, str], timeout_s: float
) -> tuple[connections.Route, http.client.HTTPConnection, http.client.HTTPResponse]:
    """The answer's head for GET `url`; FetchError or _Transient when there is none."""
    try:
        return connections.get(url, headers, timeout_s)
    except ssl.SSLError as err:  # a certificate error is a ValueError too
        raise FetchError(f"TLS error: {err}") from None
    except ValueError as err:
        raise FetchError(f"bad URL: {err}") from None
    except socket.gaierror as err:
        raise FetchError(f"host not found: {err}") from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(_words(err)) from None


def _not_ok(response: http.client.HTTPResponse, etag: str, last_modified: str) -> Fetched:
    """A 304's Fetched (nothing changed); FetchError or _Transient for any other status."""
    if response.status == 304:
        return Fetched(None, etag, last_modified)
    reason = f"HTTP {response.status} {response.reason}"
    if response.status in RETRIED_STATUSES:
        raise _Transient(reason, retry_after(response.headers.get("Retry-After")))
    raise FetchError(reason)


def _read_capped(
    response: http.client.HTTPResponse, max_bytes: int | None, deadline: float
) -> bytes:
    """The body, read in chunks; FetchError as soon as it passes `max_bytes` or the deadline."""
    declared = response.headers.get("Content-Length", "")
    if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(
            f"file too large: Content-Length {declared} bytes > features.max_file_bytes "
            f"{max_bytes}; not read"
        )
    parts: list[bytes] = []
    got = 0
    try:
        while chunk := response.read(_CHUNK):
            got += len(chunk)
            if max_bytes is not None and got > max_bytes:
                raise FetchError(
                    f"file too large: more than features.max_file_bytes {max_bytes} bytes; "
                    f"stopped after {got}"
                )
            if time.monotonic() > deadline:
                raise _Transient(f"download too slow: {got} bytes in the time allowed")
            parts.append(chunk)
    except http.client.IncompleteRead as err:
        raise _Transient(
            f"connection closed mid-body after {got + len(err.partial)} bytes"
            + (f" of {declared}" if declared else "")
        ) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise _Transient(_words(err)) from None
    if declared.isdigit() and got < int(declared):
        raise _Transient(f"connection closed mid-body after {got} of {declared} bytes")
    return b"".join(parts)


def _words(err: object) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
