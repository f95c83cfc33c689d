"""GET /query (neighbours of a catalog image) and POST /query (of an uploaded image).

Uploads are checked in the order that costs least first: parameters (by FastAPI, from the
declared models), Content-Length, media type, the body, the header's pixel count; only then
does the image wait for a decode slot. Parsing the body, checking filters, decoding, embedding
and searching run in worker threads, so the event loop (and /health) never waits on them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse

from vasrch.catalog.images import Decoded, Rejection, decode_image
from vasrch.catalog.products import FilterSpec
from vasrch.index.search_index import SearchResult
from vasrch.service.dependencies import Metrics, ServedRun, Settings, Slots
from vasrch.service.errors import RequestError
from vasrch.service.holder import Served
from vasrch.service.limits import check_pixels
from vasrch.service.memory import trim
from vasrch.service.metrics import ServiceMetrics
from vasrch.service.parameters import CatalogQuery, SearchOptions
from vasrch.service.schemas import QueryAnswer, refusals
from vasrch.service.settings import ServiceSettings
from vasrch.service.uploads import (
    body_limit,
    check_length,
    check_media_type,
    media_type,
    parse_upload,
    read_body,
    upload_openapi,
)

# Decodes above this many pixels hand their freed memory back at once (see vasrch.service.memory).
TRIM_ABOVE_PIXELS = 4_000_000

router = APIRouter(tags=["search"])

Options = tuple[int | None, int | None, FilterSpec | None]


@router.get(
    "/query",
    response_model=QueryAnswer,
    summary="Neighbours of a catalog image",
    responses=refusals(400, 404),
)
async def query_by_id(
    query: Annotated[CatalogQuery, Query()],
    served: ServedRun,
    settings: Settings,
    metrics: Metrics,
) -> JSONResponse:
    start = time.perf_counter()
    if served.searcher.index.rows_of([query.id])[0] < 0:
        raise RequestError(404, f"image id {query.id!r} is not in run {served.run_id}")
    options = (query.top_n, query.probes, await _checked(served, query.filter_spec))
    result = await anyio.to_thread.run_sync(
        _search_id, served, query.id, _chosen(settings, options), metrics
    )
    return _answer(served, query.id, result, start, settings.show_paths)


@router.post(
    "/query",
    response_model=QueryAnswer,
    summary="Neighbours of an uploaded image",
    responses=refusals(400, 411, 413, 415, 503),
    openapi_extra=upload_openapi(),
)
async def query_upload(
    request: Request,
    query: Annotated[SearchOptions, Query()],
    served: ServedRun,
    settings: Settings,
    metrics: Metrics,
    slots: Slots,
) -> JSONResponse:
    start = time.perf_counter()
    content_type = request.headers.get("content-type", "")
    limit = body_limit(media_type(content_type), settings.max_upload_bytes)
    check_length(request, limit)
    media = check_media_type(content_type)
    body = await read_body(request, limit)
    upload = await anyio.to_thread.run_sync(
        parse_upload, media, content_type, body, settings.max_upload_bytes
    )
    top_n = _once("top_n", query.top_n, upload.top_n)
    probes = _once("probes", query.probes, upload.probes)
    if query.filters and upload.filters:
        raise RequestError(400, "filters are given in both the query string and the JSON body")
    check_pixels(upload.data, settings.max_query_pixels)
    options = (top_n, probes, await _checked(served, query.filter_spec or upload.filters))
    async with slots.hold():
        with metrics.decoding.track_inprogress():
            size = served.backbone.spec.input_size
            decoded = await anyio.to_thread.run_sync(_decode, upload.data, size, settings, metrics)
    if isinstance(decoded, Rejection):
        raise RequestError(400, f"not a usable image: {decoded.reason}")
    result = await anyio.to_thread.run_sync(
        _embed_and_search, served, decoded.pixels, upload.data, _chosen(settings, options), metrics
    )
    return _answer(served, upload.name, result, start, settings.show_paths)


def _once(name: str, from_query: int | None, from_body: int | None) -> int | None:
    if from_query is not None and from_body is not None:
        raise RequestError(400, f"{name} is given in both the query string and the JSON body")
    return from_body if from_body is not None else from_query


async def _checked(served: Served, filters: FilterSpec | None) -> FilterSpec | None:
    """The filters, or 400 naming the catalog's columns when one is unknown; their mask is
    made (and cached) in a worker thread."""
    try:
        await anyio.to_thread.run_sync(served.searcher.allowed, filters)
    except ValueError as err:
        raise RequestError(400, str(err)) from None
    return filters or None


def _chosen(settings: ServiceSettings, options: Options) -> Options:
    """The request's top_n and probes, else the server's (None: Searcher.params decides)."""
    top_n, probes, filters = options
    return (
        settings.top_n if top_n is None else top_n,
        settings.probes if probes is None else probes,
        filters,
    )


def _decode(
    data: bytes, size: int, settings: ServiceSettings, metrics: ServiceMetrics
) -> Decoded | Rejection:
    with metrics.decode.time():
        decoded = decode_image(data, size, settings.max_query_pixels)
    if isinstance(decoded, Decoded) and decoded.width * decoded.height > TRIM_ABOVE_PIXELS:
        trim()
    return decoded


def _embed_and_search(
    served: Served, pixels: np.ndarray, data: bytes, options: Options, metrics: ServiceMetrics
) -> SearchResult:
    top_n, probes, filters = options
    own = served.searcher.catalog_photo([hashlib.sha256(data).hexdigest()])
    with metrics.embed.time():
        vectors = served.backbone.embed(pixels[None])
    with metrics.search.time():
        return served.searcher.search_vectors(vectors, top_n, probes, own, filters)


def _search_id(
    served: Served, image_id: str, options: Options, metrics: ServiceMetrics
) -> SearchResult:
    top_n, probes, filters = options
    with metrics.search.time():
        return served.searcher.search_ids([image_id], top_n, probes, filters)


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
