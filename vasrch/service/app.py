"""The FastAPI application: the routers of `vasrch.service.routes`, the shared state their
dependencies read, the middleware around them and the JSON refusals.

GET /health, GET /identify, GET /query?id=, POST /query (raw image, multipart field `image`, or
JSON base64), GET /metrics, POST /products/hide and /products/unhide, GET /products/hidden (these
three always need the token), and the docs: /docs, /redoc, /openapi.json. Every refusal is
`{"error": reason}` with a 4xx/5xx. With a token, every route but /health (which then says only
that the service is up), /identify and the docs needs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from threadpoolctl import threadpool_limits

from vasrch import __version__
from vasrch.service.dependencies import require_token
from vasrch.service.handlers import add_error_answers
from vasrch.service.holder import RunHolder
from vasrch.service.limits import DecodeSlots
from vasrch.service.metrics import ServiceMetrics
from vasrch.service.middleware import Observe
from vasrch.service.routes import docs, products, search, status
from vasrch.service.schemas import refusals
from vasrch.service.settings import ServiceSettings

DESCRIPTION = """Similar products for an image, from a warm model and index.

Send an image to `POST /query` as the raw body (`Content-Type: image/jpeg`, `image/png` ...),
as the field `image` of a `multipart/form-data` form, or as JSON `{{"image_base64": "..."}}`
(at most {max_upload_bytes} bytes of image, at most {max_query_pixels} pixels); or ask for the
neighbours of a catalog image with `GET /query?id=`. Every refusal is
`{{"error": "<what was wrong and what to do>"}}`. {access}
"""
GUARDED = (
    "This server was started with a token: every path but `/health`, `/identify` and these "
    "docs needs the header `Authorization: Bearer <token>` (the **Authorize** button sends it)."
)
OPEN = "This server was started without a token: no path needs one."


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app runs: a thread follows runs/LATEST (unless the run is pinned), and
    requests search with one BLAS thread."""
    holder: RunHolder = app.state.holder
    metrics: ServiceMetrics = app.state.metrics

    def sync_metrics() -> None:
        metrics.serving(holder.served.run_id, holder.reloads, holder.reload_failures)

    sync_metrics()
    stop = threading.Event()
    watcher = threading.Thread(
        target=holder.watch,
        args=(stop, app.state.settings.reload_interval_s, sync_metrics),
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


def create_app(
    settings: ServiceSettings, holder: RunHolder, metrics: ServiceMetrics | None = None
) -> FastAPI:
    """The service's ASGI application around a loaded run."""
    app = FastAPI(
        title="vasrch query service",
        version=__version__,
        description=DESCRIPTION.format(
            max_upload_bytes=settings.max_upload_bytes,
            max_query_pixels=settings.max_query_pixels,
            access=GUARDED if settings.token else OPEN,
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = metrics = metrics or ServiceMetrics()
    app.state.slots = DecodeSlots(settings.decode_slots, settings.decode_wait_s)
    app.state.started = time.monotonic()

    guard = {"dependencies": [Depends(require_token)], "responses": refusals(401)}
    guarded = guard if settings.token else {}
    # hiding always needs a token: without one, the routes exist only to say so (403)
    hiding = guarded | {"responses": refusals(401, 403) if guarded else refusals(403)}
    routers = [
        (status.health_router, {}),
        (search.router, guarded),
        (status.metrics_router, guarded),
        (products.router, hiding),
        (docs.router, {}),
    ]
    for router, options in routers:
        app.include_router(router, **options)
    docs.mount_assets(app)

    add_error_answers(app, [*app.routes, *(r for router, _ in routers for r in router.routes)])
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
