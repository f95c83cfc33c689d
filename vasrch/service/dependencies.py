"""What a route asks FastAPI for (`Depends`): the app's settings, served run, metrics and decode
slots, which `create_app` keeps in `app.state`, and the bearer token check of guarded routes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vasrch.service.errors import RequestError
from vasrch.service.holder import RunHolder, Served
from vasrch.service.limits import DecodeSlots
from vasrch.service.metrics import ServiceMetrics
from vasrch.service.settings import TOKEN_ENV, ServiceSettings

bearer = HTTPBearer(
    auto_error=False,
    description=f"The token the server was started with (--token or {TOKEN_ENV}).",
)


def get_settings(request: Request) -> ServiceSettings:
    """The service's settings."""
    return request.app.state.settings


def get_holder(request: Request) -> RunHolder:
    """The holder of the served run."""
    return request.app.state.holder


def get_metrics(request: Request) -> ServiceMetrics:
    """The service's Prometheus metrics."""
    return request.app.state.metrics


def get_slots(request: Request) -> DecodeSlots:
    """The decode slots uploads share."""
    return request.app.state.slots


Settings = Annotated[ServiceSettings, Depends(get_settings)]
Holder = Annotated[RunHolder, Depends(get_holder)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
Slots = Annotated[DecodeSlots, Depends(get_slots)]


def get_served(holder: Holder) -> Served:
    """The run serving now, taken once per request, so one complete run answers it all."""
    return holder.served


ServedRun = Annotated[Served, Depends(get_served)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def authorized(settings: ServiceSettings, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """True when the service needs no token or the request carries it."""
    token = settings.token
    sent = credentials.credentials.encode("latin-1") if credentials else b""
    return token is None or hmac.compare_digest(sent, token.encode())


def require_token(request: Request, settings: Settings, credentials: Credentials) -> None:
    """401 unless the request carries `Authorization: Bearer <the server's token>`."""
    if not authorized(settings, credentials):
        problem = (
            "wrong bearer token"
            if "authorization" in request.headers
            else "this service needs a bearer token"
        )
        raise RequestError(
            401,
            f"{problem}: send the header 'Authorization: Bearer <token>' with the token the "
            f"server was started with (--token or {TOKEN_ENV})",
            {"WWW-Authenticate": "Bearer"},
        )
