"""What the service reports about itself: GET /health (whether it is up, to all; the served run
and the defaults a request gets, to those with the token), GET /identify (a proof that this is
the service the workspace's record names, open to all: a client asks before it sends its token)
and GET /metrics (Prometheus; guarded like /query)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from vasrch.service.dependencies import Holder, Metrics, ServedRun, Settings, authorized, bearer
from vasrch.service.record import identity_proof
from vasrch.service.schemas import Health, Identity, refusals

health_router = APIRouter(tags=["service"])
metrics_router = APIRouter(tags=["service"])

Nonce = Annotated[
    str,
    Query(
        pattern="^[0-9a-f]{32,128}$",
        description="A fresh random challenge, 32 to 128 lower-case hex digits.",
    ),
]


@health_router.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    summary="Whether the service is up; with the token, the served run and request defaults",
)
async def health(
    request: Request, served: ServedRun, holder: Holder, settings: Settings
) -> JSONResponse:
    start = time.perf_counter()
    # the bearer read here, not as a dependency: the path needs no token, and says so
    if not authorized(settings, await bearer(request)):
        return JSONResponse({"status": "ok"})
    defaults = served.searcher.params(settings.top_n, settings.probes)
    return JSONResponse(
        {
            "status": "ok",
            "run_id": served.run_id,
            "k": served.searcher.index.k,
            "images": served.searcher.index.n,
            "top_n": defaults.top_n,
            "probes": defaults.probes,
            "uptime_s": round(time.monotonic() - request.app.state.started, 1),
            "loaded_at": served.loaded_at,
            "reloads": holder.reloads,
            "reload_error": holder.reload_error,
            "store_error": holder.store_error,
            "ms": round((time.perf_counter() - start) * 1000, 2),
        }
    )


@health_router.get(
    "/identify",
    response_model=Identity,
    summary="Prove this is the service the workspace's record names",
    responses=refusals(400),
)
async def identify(request: Request, nonce: Nonce, settings: Settings) -> JSONResponse:
    port = request.scope["server"][1] if request.scope.get("server") else 0
    proof = identity_proof(settings.proof_key, settings.instance, port, nonce)
    return JSONResponse({"proof": proof})


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(metrics: Metrics) -> Response:
    text, content_type = metrics.render()
    return Response(text, media_type=content_type)
