"""What the service reports about itself: GET /health (the served run and the defaults a
request gets; open to all, token or not) and GET /metrics (Prometheus; guarded like /query)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from vasrch.service.dependencies import Holder, Metrics, ServedRun, Settings
from vasrch.service.schemas import Health

health_router = APIRouter(tags=["service"])
metrics_router = APIRouter(tags=["service"])


@health_router.get(
    "/health", response_model=Health, summary="The served run and the defaults a request gets"
)
async def health(
    request: Request, served: ServedRun, holder: Holder, settings: Settings
) -> JSONResponse:
    start = time.perf_counter()
    defaults = served.searcher.params(settings.top_n, settings.probes)
    return JSONResponse(
        {
            "status": "ok",
            "instance": settings.instance,
            "run_id": served.run_id,
            "k": served.searcher.index.k,
            "images": served.searcher.index.n,
            "top_n": defaults.top_n,
            "probes": defaults.probes,
            "uptime_s": round(time.monotonic() - request.app.state.started, 1),
            "loaded_at": served.loaded_at,
            "reloads": holder.reloads,
            "reload_error": holder.reload_error,
            "ms": round((time.perf_counter() - start) * 1000, 2),
        }
    )


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(metrics: Metrics) -> Response:
    text, content_type = metrics.render()
    return Response(text, media_type=content_type)
