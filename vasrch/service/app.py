"""The FastAPI application: routes, their answers and refusals, and the middleware around them.

GET /health, GET /query?id=, POST /query (raw image, multipart field `image`, or JSON base64),
GET /metrics, /docs and /openapi.json. Every refusal is `{"error": reason}` with a 4xx/5xx.
Uploads are checked in the order that costs least first: parameters, Content-Length, media
type, the body, the header's pixel count; only then does the image wait for a decode slot.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from threadpoolctl import threadpool_limits

from vasrch import __version__
from vasrch.catalog.images import Decoded, Rejection, decode_image
from vasrch.catalog.products import FilterSpec, parse_filters
from vasrch.index.search_index import SearchResult
from vasrch.service.errors import RequestError, error_response
from vasrch.service.holder import RunHolder, Served
from vasrch.service.limits import DecodeSlots, check_pixels
from vasrch.service.memory import trim
from vasrch.service.metrics import ServiceMetrics
from vasrch.service.middleware import Observe, RequireToken
from vasrch.service.schemas import ErrorBody, Health, ImageQuery, QueryAnswer
from vasrch.service.settings import MAX_TOP_N, ServiceSettings
from vasrch.service.uploads import (
    JSON,
    body_limit,
    check_length,
    check_media_type,
    media_type,
    parse_upload,
    read_body,
)

QUERY_PARAMS = frozenset({"id", "top_n", "probes"})
FILTER_PREFIX = "filter."  # filter.category=shoes,boots
MAX_PROBES = 1_000_000
# Decodes above this many pixels hand their freed memory back at once (see vasrch.service.memory).
TRIM_ABOVE_PIXELS = 4_000_000
ROUTES_HINT = "use GET /health, GET /query?id=..., POST /query, GET /metrics or GET /docs"

DESCRIPTION = """Similar products for an image, from a warm model and index.

Send an image to `POST /query` as the raw body (`Content-Type: image/jpeg`, `image/png` ...),
as the field `image` of a `multipart/form-data` form, or as JSON `{"image_base64": "..."}`; or
ask for the neighbours of a catalog image with `GET /query?id=`. Every refusal is
`{"error": "<what was wrong and what to do>"}`. When the server was started with a token, every
path but `/health` needs the header `Authorization: Bearer <token>`.
"""


def _param(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


TOP_N_DOC = _param(
    "top_n",
    "Results to return (default: /health's top_n).",
    {"type": "integer", "minimum": 1, "maximum": MAX_TOP_N},
)
PROBES_DOC = _param(
    "probes",
    "Nearest clusters whose members are ranked (default: /health's probes).",
    {"type": "integer", "minimum": 1},
)
ID_DOC = _param("id", "A catalog image id; the image itself is left out.", {"type": "string"}, True)
UPLOAD_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"image": {"type": "string", "format": "binary"}},
                "required": ["image"],
            }
        },
        JSON: {"schema": ImageQuery.model_json_schema()},
    },
}


def _refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _int_param(params: QueryParams, name: str, high: int) -> int | None:
    values = params.getlist(name)
    if not values:
        return None
    try:
        value = int(values[-1])
    except ValueError:
        value = 0
    if not 1 <= value <= high:
        raise RequestError(400, f"{name} must be an integer from 1 to {high}, got {values[-1]!r}")
    return value


def _options(params: QueryParams) -> tuple[int | None, int | None]:
    """top_n and probes of the query string (None where it names none)."""
    unknown = sorted(
        k for k in set(params.keys()) - QUERY_PARAMS if not k.startswith(FILTER_PREFIX)
    )
    if unknown:
        raise RequestError(
            400,
            f"unknown query parameter(s) {unknown}; known: {sorted(QUERY_PARAMS)} and "
            f"{FILTER_PREFIX}<column>",
        )
    return _int_param(params, "top_n", MAX_TOP_N), _int_param(params, "probes", MAX_PROBES)


def _filters(params: QueryParams) -> dict[str, list[str]]:
    """The query string's filters: filter.<column>=v1,v2 (repeatable)."""
    try:
        return parse_filters(
            f"{k.removeprefix(FILTER_PREFIX)}={v}"
            for k, v in params.multi_items()
            if k.startswith(FILTER_PREFIX)
        )
    except ValueError as err:
        raise RequestError(400, f"{err} (as {FILTER_PREFIX}column=value)") from None


def _once(name: str, from_query: int | None, from_body: int | None) -> int | None:
    if from_query is not None and from_body is not None:
        raise RequestError(400, f"{name} is given in both the query string and the JSON body")
    return from_body if from_body is not None else from_query


def _answer(
    served: Served, query: str, result: SearchResult, start: float, show_paths: bool
) -> JSONResponse:
    results = served.searcher.answer_rows(result, show_paths)
    return JSONResponse(
        {
            "run_id": served.run_id,
            "query": query,
            "results": results,
            "ms": round((time.perf_counter() - start) * 1000, 2),
        }
    )


def create_app(
    settings: ServiceSettings, holder: RunHolder, metrics: ServiceMetrics | None = None
) -> FastAPI:
    """The service's ASGI application around a loaded run; while it runs (its lifespan), a
    thread follows runs/LATEST unless the run is pinned."""
    metrics = metrics or ServiceMetrics()
    slots = DecodeSlots(settings.decode_slots, settings.decode_wait_s)
    started = time.monotonic()

    def sync_metrics() -> None:
        metrics.serving(holder.served.run_id, holder.reloads, holder.reload_failures)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sync_metrics()
        stop = threading.Event()
        watcher = threading.Thread(
            target=holder.watch,
            args=(stop, settings.reload_interval_s, sync_metrics),
            name="vasrch-latest-watcher",
            daemon=True,
        )
        if not holder.pinned:
            watcher.start()
        try:
            # One BLAS thread: a request searches with one query, where OpenBLAS's worker
            # threads only add hand-off stalls; concurrency comes from the requests.
            with threadpool_limits(limits=1, user_api="blas"):
                yield
        finally:
            stop.set()
            if watcher.is_alive():
                await anyio.to_thread.run_sync(watcher.join)

    app = FastAPI(
        title="vasrch query service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )

    def decode(data: bytes, size: int) -> Decoded | Rejection:
        with metrics.decode.time():
            decoded = decode_image(data, size, settings.max_query_pixels)
        if isinstance(decoded, Decoded) and decoded.width * decoded.height > TRIM_ABOVE_PIXELS:
            trim()
        return decoded

    def chosen(top_n: int | None, probes: int | None) -> tuple[int | None, int | None]:
        """The request's top_n and probes, else the server's (None: Searcher.params decides)."""
        return (
            settings.top_n if top_n is None else top_n,
            settings.probes if probes is None else probes,
        )

    def embed_and_search(
        served: Served,
        pixels: np.ndarray,
        data: bytes,
        options: tuple[int | None, int | None, FilterSpec | None],
    ) -> SearchResult:
        top_n, probes, filters = options
        own = served.searcher.catalog_photo([hashlib.sha256(data).hexdigest()])
        with metrics.embed.time():
            vectors = served.backbone.embed(pixels[None])
        with metrics.search.time():
            return served.searcher.search_vectors(vectors, *chosen(top_n, probes), own, filters)

    def search_id(
        served: Served,
        image_id: str,
        options: tuple[int | None, int | None, FilterSpec | None],
    ) -> SearchResult:
        top_n, probes, filters = options
        with metrics.search.time():
            return served.searcher.search_ids([image_id], *chosen(top_n, probes), filters)

    def check_filters(served: Served, filters: FilterSpec | None) -> FilterSpec | None:
        """The filters, or 400 naming the catalog's columns when one is unknown."""
        try:
            served.searcher.allowed(filters)
        except ValueError as err:
            raise RequestError(400, str(err)) from None
        return filters or None

    @app.get(
        "/health",
        response_model=Health,
        summary="The served run and the defaults a request gets",
    )
    async def health() -> JSONResponse:
        start = time.perf_counter()
        served = holder.served
        defaults = served.searcher.params(*chosen(None, None))
        return JSONResponse(
            {
                "status": "ok",
                "instance": settings.instance,
                "run_id": served.run_id,
                "k": served.searcher.index.k,
                "images": served.searcher.index.n,
                "top_n": defaults.top_n,
                "probes": defaults.probes,
                "uptime_s": round(time.monotonic() - started, 1),
                "loaded_at": served.loaded_at,
                "reloads": holder.reloads,
                "reload_error": holder.reload_error,
                "ms": round((time.perf_counter() - start) * 1000, 2),
            }
        )

    @app.get(
        "/query",
        response_model=QueryAnswer,
        summary="Neighbours of a catalog image",
        responses=_refusals(400, 401, 404),
        openapi_extra={"parameters": [ID_DOC, TOP_N_DOC, PROBES_DOC]},
    )
    async def query_id(request: Request) -> JSONResponse:
        start = time.perf_counter()
        top_n, probes = _options(request.query_params)
        filters = _filters(request.query_params)
        image_id = (request.query_params.getlist("id") or [""])[-1]
        if not image_id:
            raise RequestError(
                400, "GET /query needs ?id=<catalog image id>; to search with an image, POST it"
            )
        served = holder.served
        if served.searcher.index.rows_of([image_id])[0] < 0:
            raise RequestError(404, f"image id {image_id!r} is not in run {served.run_id}")
        options = (top_n, probes, check_filters(served, filters))
        result = await anyio.to_thread.run_sync(search_id, served, image_id, options)
        return _answer(served, image_id, result, start, settings.show_paths)

    @app.post(
        "/query",
        response_model=QueryAnswer,
        summary="Neighbours of an uploaded image",
        responses=_refusals(400, 401, 411, 413, 415, 503),
        openapi_extra={"parameters": [TOP_N_DOC, PROBES_DOC], "requestBody": UPLOAD_BODY},
    )
    async def query_upload(request: Request) -> JSONResponse:
        start = time.perf_counter()
        top_n, probes = _options(request.query_params)
        filters = _filters(request.query_params)
        content_type = request.headers.get("content-type", "")
        limit = body_limit(media_type(content_type), settings.max_upload_bytes)
        check_length(request, limit)
        media = check_media_type(content_type)
        body = await read_body(request, limit)
        upload = parse_upload(media, content_type, body, settings.max_upload_bytes)
        top_n = _once("top_n", top_n, upload.top_n)
        probes = _once("probes", probes, upload.probes)
        if filters and upload.filters:
            raise RequestError(400, "filters are given in both the query string and the JSON body")
        check_pixels(upload.data, settings.max_query_pixels)
        served = holder.served
        options = (top_n, probes, check_filters(served, filters or upload.filters))
        async with slots.hold():
            with metrics.decoding.track_inprogress():
                size = served.backbone.spec.input_size
                decoded = await anyio.to_thread.run_sync(decode, upload.data, size)
        if isinstance(decoded, Rejection):
            raise RequestError(400, f"not a usable image: {decoded.reason}")
        result = await anyio.to_thread.run_sync(
            embed_and_search, served, decoded.pixels, upload.data, options
        )
        return _answer(served, upload.name, result, start, settings.show_paths)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        text, content_type = metrics.render()
        return Response(text, media_type=content_type)

    allowed = _allowed_methods(app)
    _add_error_answers(app, allowed)
    if settings.token:
        app.add_middleware(RequireToken, token=settings.token)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(Observe, metrics=metrics, log_requests=settings.access_log)
    return app


def _allowed_methods(app: FastAPI) -> dict[str, list[str]]:
    """The methods each path answers (HEAD left out), for 405 answers."""
    allowed: dict[str, set[str]] = {}
    for route in app.routes:
        methods = getattr(route, "methods", None) or set()
        allowed.setdefault(getattr(route, "path", ""), set()).update(methods - {"HEAD"})
    return {path: sorted(methods) for path, methods in allowed.items()}


def _add_error_answers(app: FastAPI, allowed: dict[str, list[str]]) -> None:
    """Every refusal as `{"error": reason}`: ours, the router's 404/405, and bugs (500)."""

    async def refused(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestError)
        headers = dict(err.headers)
        unread = not getattr(request.state, "body_read", False)
        if unread and request.headers.get("expect", "").lower() == "100-continue":
            headers["Connection"] = "close"  # the client holds the body back: do not wait for it
        return error_response(err.status, err.reason, headers)

    async def routing(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        path = request.url.path
        if err.status_code == 404:
            return error_response(404, f"no such path {path!r}; {ROUTES_HINT}")
        if err.status_code == 405:
            methods = allowed.get(path, [])
            return error_response(
                405,
                f"{request.method} is not allowed on {path}; use {' or '.join(methods)}",
                {"Allow": ", ".join(methods)},
            )
        return error_response(err.status_code, str(err.detail), err.headers)

    async def bug(request: Request, err: Exception) -> JSONResponse:
        return error_response(500, "internal error while answering; the server log has the details")

    app.add_exception_handler(RequestError, refused)
    app.add_exception_handler(StarletteHTTPException, routing)
    app.add_exception_handler(Exception, bug)
