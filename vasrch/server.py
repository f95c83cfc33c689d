"""The warm query service: an HTTP endpoint that answers image queries with a run kept in memory.

Endpoints (JSON in and out; every error is a 4xx/5xx with ``{"error": reason}``):

- ``GET /health``: the served run id, k, image count, the top_n and probes a request gets when
  it names none, uptime, and the last failed reload if any.
- ``GET /query?id=<catalog image id>&top_n=&probes=``: neighbours of a catalog image (itself
  excluded).
- ``POST /query?top_n=&probes=``: neighbours of an uploaded image, sent as the raw body
  (Content-Type ``image/*`` or ``application/octet-stream``) or as the ``image`` field of a
  ``multipart/form-data`` form.

Answers are ``{"run_id", "query", "results": [{"rank", "image_id", "path", "score"}], "ms"}``.

The backbone and the index stay warm. Unless a run is pinned, a watcher thread reads
``runs/LATEST`` every ``reload_interval_s``; when it names another run, that run is loaded and
verified (artifact hashes), its backbone built and a warm-up query answered, all off the request
path, and only then is the one reference to the served run swapped under a lock. A request takes
that reference once, so it is answered entirely by one complete run. A run that fails to load is
logged and reported by /health; the old run keeps serving.

Uploads are limited by ``max_upload_bytes``, checked from Content-Length before the body is read
(413); bodies that are not decodable images (not an image, truncated, a decompression bomb) get a
400 with the decoder's reason.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from vasrch.backbones import Backbone
from vasrch.config import SearchConfig
from vasrch.runs import latest_run_id
from vasrch.search import Searcher, embed_files, open_run

log = logging.getLogger("vasrch.server")

MAX_TOP_N = 1000
QUERY_PARAMS = frozenset({"id", "top_n", "probes"})
ROUTES: dict[str, tuple[str, ...]] = {"/health": ("GET",), "/query": ("GET", "POST")}
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
# Longest time a request may stall between bytes, and the time spent draining an unread body
# before closing (so the client reads the error instead of a connection reset).
REQUEST_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 2.0


class RequestError(Exception):
    """A request the server refuses: HTTP status and the reason sent back as JSON."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Served:
    """One complete run, ready to answer: its searcher and its warm backbone."""

    searcher: Searcher
    backbone: Backbone
    loaded_at: str

    @property
    def run_id(self) -> str:
        """The served run's id, as its manifest records it."""
        return self.searcher.run_id

    @property
    def name(self) -> str:
        """The run folder's name, as runs/LATEST names it."""
        return self.searcher.run_folder.name


def load_served(workspace: Path, run: str | None, search: SearchConfig | None = None) -> Served:
    """Load and verify a run, build its backbone for single images, and answer one warm-up query
    so that the first real request pays no tracing or lazy-initialisation cost; `search` sets
    top_n and probes when a request names none."""
    searcher = open_run(workspace, run, search=search)
    backbone = searcher.backbone(batch_size=1)
    size = backbone.spec.input_size
    vectors = backbone.embed(np.zeros((1, size, size, 3), dtype=np.uint8))
    searcher.search_vectors(vectors, top_n=1, probes=1)
    searcher.index.rows_of([""])
    return Served(searcher, backbone, dt.datetime.now(dt.timezone.utc).isoformat())


class RunHolder:
    """The served run; `refresh` swaps in the run LATEST names once it has loaded completely."""

    def __init__(
        self, workspace: Path, run: str | None = None, search: SearchConfig | None = None
    ) -> None:
        self.workspace = Path(workspace)
        self.search = search
        self.pinned = run is not None
        self._lock = threading.Lock()
        self._served = load_served(self.workspace, run, search)
        self._failed: str | None = None
        self.reload_error: str | None = None
        self.reloads = 0

    @property
    def served(self) -> Served:
        """The run serving now; a request takes it once, so one run answers it all."""
        with self._lock:
            return self._served

    def refresh(self) -> bool:
        """Load the run LATEST names if it is a new one; True when the served run changed.

        A run that failed to load is not retried until LATEST names another one."""
        if self.pinned:
            return False
        wanted = latest_run_id(self.workspace)
        if wanted is None or wanted in (self.served.name, self._failed):
            return False
        log.info("runs/LATEST names %s: loading it", wanted)
        try:
            fresh = load_served(self.workspace, wanted, self.search)
        except Exception as err:
            self._failed = wanted
            self.reload_error = f"run {wanted}: {type(err).__name__}: {err}"
            log.warning("keeping run %s: could not load %s", self.served.run_id, self.reload_error)
            return False
        with self._lock:
            old, self._served = self._served, fresh
        self._failed = None
        self.reload_error = None
        self.reloads += 1
        log.info("now serving run %s (was %s)", fresh.run_id, old.run_id)
        return True

    def watch(self, stop: threading.Event, interval_s: float) -> None:
        """Call `refresh` every `interval_s` until `stop` is set; a bug is logged, never fatal."""
        while not stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:
                log.exception("reload check failed")


class QueryServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the served run and the request limits; `serve_forever` also
    runs the LATEST watcher (unless the run is pinned)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        holder: RunHolder,
        top_n: int | None,
        probes: int | None,
        max_upload_bytes: int,
        reload_interval_s: float,
    ) -> None:
        super().__init__(address, QueryHandler)
        self.holder = holder
        self.top_n = top_n
        self.probes = probes
        self.max_upload_bytes = max_upload_bytes
        self.reload_interval_s = reload_interval_s
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        """http://host:port of the listening socket (the real port when 0 was asked)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection is routine; anything else is logged."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("%s dropped the connection", client_address)
        else:
            log.exception("error serving %s", client_address)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve requests until `shutdown`, with the LATEST watcher running beside them unless the
        run is pinned; the watcher is stopped on the way out."""
        stop = threading.Event()
        watcher = None
        if not self.holder.pinned:
            watcher = threading.Thread(
                target=self.holder.watch,
                args=(stop, self.reload_interval_s),
                name="vasrch-latest-watcher",
                daemon=True,
            )
            watcher.start()
        try:
            super().serve_forever(poll_interval)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()


def _int_param(
    params: dict[str, list[str]], name: str, default: int | None, high: int
) -> int | None:
    values = params.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        value = 0
    if not 1 <= value <= high:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"{name} must be an integer from 1 to {high}, got {values[-1]!r}",
        )
    return value


def _multipart_image(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The bytes and filename of the form field `image` of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart/form-data body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "image":
            data = part.get_payload(decode=True) or b""
            return data, part.get_filename() or "upload"
    raise RequestError(
        HTTPStatus.BAD_REQUEST,
        "multipart/form-data has no field named 'image'; send the file as it",
    )


def _results(served: Served, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    paths = served.searcher.paths
    return [
        {"rank": rank, "image_id": image_id, "path": paths.get(image_id), "score": float(score)}
        for rank, (image_id, score) in enumerate(zip(ids, scores, strict=True), start=1)
        if np.isfinite(score)
    ]


class QueryHandler(BaseHTTPRequestHandler):
    """Routes /health and /query; every answer is JSON."""

    server: QueryServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S
    # Headers and body are two writes; with Nagle's algorithm the body would wait for the
    # client's delayed ACK (~40 ms on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's access log, sent to the vasrch.server logger at DEBUG level."""
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers too long ...) as JSON too."""
        self.close_connection = True
        self._send_json(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase})

    def _send_json(
        self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _discard_unread_body(self) -> None:
        """Read and drop what the client still sends (bounded in time), so that closing the
        socket does not reset the connection before the client has read the error."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_TIMEOUT_S)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass

    def _dispatch(self) -> None:
        start = time.perf_counter()
        url = urlsplit(self.path)
        allowed = ROUTES.get(url.path)
        self._body_read = False
        try:
            if allowed is None:
                raise RequestError(
                    HTTPStatus.NOT_FOUND,
                    f"no such path {url.path!r}; use GET /health, GET /query?id=... or POST /query",
                )
            if self.command not in allowed:
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{self.command} is not allowed on {url.path}; use {' or '.join(allowed)}",
                )
            if url.path == "/health":
                payload = self._health()
            elif self.command == "GET":
                payload = self._query_id(url.query)
            else:
                payload = self._query_upload(url.query)
            payload["ms"] = round((time.perf_counter() - start) * 1000, 2)
            self._send_json(HTTPStatus.OK, payload)
        except RequestError as err:
            headers = {"Allow": ", ".join(allowed)} if err.status == 405 and allowed else None
            self._send_error_json(err.status, err.reason, headers)
        except (TimeoutError, ConnectionError) as err:
            log.info("%s: connection dropped: %s", self.address_string(), err)
            self.close_connection = True
        except Exception as err:
            log.exception("error answering %s %s", self.command, self.path)
            self._send_error_json(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")

    def _has_unread_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        sent = bool(self.headers.get("Transfer-Encoding")) or length != "0"
        return sent and not self._body_read

    def _send_error_json(
        self, status: HTTPStatus, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """Send the error; if the request body was not read, close the connection after it."""
        unread = self._has_unread_body()
        self.close_connection = self.close_connection or unread
        self._send_json(status, {"error": reason}, headers)
        if unread:
            self._discard_unread_body()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def handle_expect_100(self) -> bool:
        """Refuse an oversized upload before the client sends it (curl asks for large ones)."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.server.max_upload_bytes:
            self.close_connection = True
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": self._too_large(length)})
            return False
        return super().handle_expect_100()

    def _too_large(self, length: str) -> str:
        return (
            f"upload of {length} bytes is larger than the limit of "
            f"{self.server.max_upload_bytes} bytes (max_upload_bytes)"
        )

    def _params(self, query: str) -> tuple[dict[str, list[str]], int | None, int | None]:
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - QUERY_PARAMS)
        if unknown:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"unknown query parameter(s) {unknown}; known: {sorted(QUERY_PARAMS)}",
            )
        top_n = _int_param(params, "top_n", self.server.top_n, MAX_TOP_N)
        probes = _int_param(params, "probes", self.server.probes, 1_000_000)
        return params, top_n, probes

    def _health(self) -> dict[str, Any]:
        holder = self.server.holder
        served = holder.served
        defaults = served.searcher.params(self.server.top_n, self.server.probes)
        return {
            "status": "ok",
            "run_id": served.run_id,
            "k": served.searcher.index.k,
            "images": served.searcher.index.n,
            "top_n": defaults.top_n,
            "probes": defaults.probes,
            "uptime_s": round(time.monotonic() - self.server.started, 1),
            "loaded_at": served.loaded_at,
            "reloads": holder.reloads,
            "reload_error": holder.reload_error,
        }

    def _query_id(self, query: str) -> dict[str, Any]:
        params, top_n, probes = self._params(query)
        image_id = (params.get("id") or [""])[-1]
        if not image_id:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                "GET /query needs ?id=<catalog image id>; to search with an image, POST it",
            )
        served = self.server.holder.served
        if served.searcher.index.rows_of([image_id])[0] < 0:
            raise RequestError(
                HTTPStatus.NOT_FOUND, f"image id {image_id!r} is not in run {served.run_id}"
            )
        result = served.searcher.search_ids([image_id], top_n, probes)
        return {
            "run_id": served.run_id,
            "query": image_id,
            "results": _results(served, result.ids[0], result.scores[0]),
        }

    def _read_upload(self) -> tuple[bytes, str]:
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED,
                "chunked uploads are not supported; send Content-Length",
            )
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED, "POST /query needs a Content-Length header"
            )
        if int(length) > self.server.max_upload_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._too_large(length))
        content_type = self.headers.get("Content-Type", "")
        media = content_type.split(";")[0].strip().lower()
        if media != "multipart/form-data" and not media.startswith(RAW_IMAGE_TYPES):
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {content_type!r} is not accepted: send the image as the body with "
                f"Content-Type image/* or as the field 'image' of multipart/form-data",
            )
        body = self.rfile.read(int(length))
        self._body_read = True
        if len(body) < int(length):
            self.close_connection = True
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"body ended after {len(body)} of {length} bytes (Content-Length)",
            )
        if media == "multipart/form-data":
            body, name = _multipart_image(content_type, body)
        else:
            name = "upload"
        if not body:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty upload: send an image")
        return body, name

    def _query_upload(self, query: str) -> dict[str, Any]:
        _, top_n, probes = self._params(query)
        body, name = self._read_upload()
        served = self.server.holder.served
        vectors, _, bad = embed_files([body], served.backbone)
        if bad:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"not a usable image: {bad[0][1]}")
        result = served.searcher.search_vectors(vectors, top_n, probes)
        return {
            "run_id": served.run_id,
            "query": name,
            "results": _results(served, result.ids[0], result.scores[0]),
        }


def make_server(
    workspace: Path,
    run: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    top_n: int | None = None,
    probes: int | None = None,
    max_upload_bytes: int = 10_000_000,
    reload_interval_s: float = 1.0,
    search: SearchConfig | None = None,
) -> QueryServer:
    """Load the run (LATEST unless `run` pins one) and bind the server; call `serve_forever`
    (in a thread, if you like), then `shutdown` and `server_close`. Port 0 picks a free port.
    top_n and probes are the defaults of requests that name none; when None, they come from
    `search` (the config's section) and the run's calibration (vasrch.search_params)."""
    for name, value in (
        ("top_n", 1 if top_n is None else top_n),
        ("probes", 1 if probes is None else probes),
        ("max_upload_bytes", max_upload_bytes),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if top_n is not None and top_n > MAX_TOP_N:
        raise ValueError(f"top_n must be at most {MAX_TOP_N}, got {top_n}")
    if reload_interval_s <= 0:
        raise ValueError(f"reload_interval_s must be positive, got {reload_interval_s}")
    holder = RunHolder(Path(workspace), run, search)
    return QueryServer((host, port), holder, top_n, probes, max_upload_bytes, reload_interval_s)


def run_query_server(
    workspace: Path,
    run: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    top_n: int | None = None,
    probes: int | None = None,
    max_upload_bytes: int = 10_000_000,
    reload_interval_s: float = 1.0,
    search: SearchConfig | None = None,
) -> None:
    """Serve queries until interrupted (Ctrl-C), reloading when runs/LATEST changes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = make_server(
        workspace, run, host, port, top_n, probes, max_upload_bytes, reload_interval_s, search
    )
    served = server.holder.served
    log.info(
        "serving run %s (%d images, k=%d) on %s%s",
        served.run_id,
        served.searcher.index.n,
        served.searcher.index.k,
        server.url,
        " (pinned)" if server.holder.pinned else ", following runs/LATEST",
    )
    # One BLAS thread: a request searches with one query, where OpenBLAS's worker threads only
    # add hand-off stalls (tens of ms on a busy machine); concurrency comes from the requests.
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=1, user_api="blas"):
            server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
