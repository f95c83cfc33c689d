"""Refusals: the error a handler raises, and the JSON answer `{"error": reason}` it becomes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import JSONResponse

from vasrch.errors import VasrchError


class RequestError(VasrchError):
    """A request the service refuses: HTTP status, the reason sent back, extra headers."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to a refused request: `{"error": reason}` with `status`."""
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def error_body(reason: str) -> bytes:
    """`{"error": reason}` as bytes, for answers written below the ASGI layer."""
    return json.dumps({"error": reason}).encode()


def validation_problems(errors: Iterable[Mapping[str, Any]]) -> str:
    """pydantic's errors of a JSON body, as one line: each field, dotted (`filters.category`),
    and what was wrong."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in errors
    )
