"""uvicorn's HTTP/1.1 protocol (h11), with Nagle's algorithm off on every connection, and a JSON
400 that says what h11 found wrong in a request it cannot parse (a bad or repeated
Content-Length, a malformed request line ...)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, H11Protocol

from vasrch.service.errors import error_body


class _Connection(h11.Connection):
    """An h11 connection that remembers why the last request could not be parsed."""

    last_error = ""

    def next_event(self) -> Any:
        """h11's next event; a parse error is remembered before it propagates."""
        try:
            return super().next_event()
        except h11.RemoteProtocolError as err:
            self.last_error = str(err)
            raise


class JSONErrorH11Protocol(H11Protocol):
    """H11Protocol with TCP_NODELAY, whose 400 for an unparseable request is JSON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self.conn = _Connection(h11.SERVER, limit)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Turn Nagle's algorithm off: an answer's headers and body are separate writes, and the
        body would wait for the client's delayed ACK (about 40 ms on Linux). asyncio does this
        itself only for sockets whose proto is TCP, which a socket handed to uvicorn (a bound
        socket, or worker processes') may not be."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def send_400_response(self, msg: str) -> None:
        """Answer 400 with `{"error": ...}` and close the connection."""
        reason = self.conn.last_error or msg
        body = error_body(
            f"malformed HTTP request: {reason}; send one valid request line, "
            "headers, and at most one Content-Length of decimal digits"
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        output = self.conn.send(
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
        )
        self.transport.write(output)
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
