"""Every refusal as `{"error": reason}`: ours (`RequestError`), parameters that fail their
declared models (400, every problem named), the router's 404/405, and bugs (500)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from vasrch.service.errors import RequestError, error_response
from vasrch.service.parameters import unknown_parameter

ROUTES_HINT = (
    "use GET /health, GET /query?id=..., POST /query, GET /metrics, GET /docs or GET /redoc"
)


def add_error_answers(app: FastAPI, routes: Iterable[BaseRoute]) -> None:
    """Answer every refusal of `app` as JSON; `routes` are all it answers (for 405s)."""
    allowed = _allowed_methods(routes)

    async def refused(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestError)
        return _refusal(request, err.status, err.reason, err.headers)

    async def invalid(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        problems = "; ".join(_problem(error) for error in err.errors())
        return _refusal(request, 400, f"{problems}; the parameters are described at /docs")

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
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, routing)
    app.add_exception_handler(Exception, bug)


def _refusal(
    request: Request, status: int, reason: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The refusal; a client that holds its body back for 100 Continue is not waited for."""
    headers = dict(headers or {})
    unread = not getattr(request.state, "body_read", False)
    if unread and request.headers.get("expect", "").lower() == "100-continue":
        headers["Connection"] = "close"
    return error_response(status, reason, headers)


def _problem(error: Mapping[str, Any]) -> str:
    """One parameter's problem, the parameter as the query string had it (`top_n=0`)."""
    name = str(error["loc"][-1])
    if error["type"] == "extra_forbidden":
        return unknown_parameter(name)
    value = error["input"] if isinstance(error["input"], str) else ""
    return f"{name}={value}: {error['msg']}"


def _allowed_methods(routes: Iterable[BaseRoute]) -> dict[str, list[str]]:
    """The methods each path answers (HEAD left out), for 405 answers."""
    allowed: dict[str, set[str]] = {}
    for route in routes:
        methods = getattr(route, "methods", None) or set()
        allowed.setdefault(getattr(route, "path", ""), set()).update(methods - {"HEAD"})
    return {path: sorted(methods) for path, methods in allowed.items()}
