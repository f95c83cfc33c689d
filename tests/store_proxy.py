"""A fault-injecting HTTP proxy in front of the test's S3 store, on loopback: it forwards each
request as received (so S3 signatures stay valid) unless a fault says otherwise: answer a status
(503 SlowDown, 500) to matching requests a number of times, or drop every connection while the
store is "down"."""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.http_threads import served_in_thread

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass
class Fault:
    """Answer `status` to `times` requests whose method is `method` and path holds `part`."""

    method: str
    part: str
    status: int
    times: int = 1


class FaultProxy:
    """The proxy's switches: `faults` to inject, `down` to drop connections; `seen` counts
    forwarded requests by method."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.faults: list[Fault] = []
        self.down = False
        self.injected = 0
        self.lock = threading.Lock()
        self.endpoint = ""

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.part in path:
                    fault.times -= 1
                    self.injected += 1
                    return fault
        return None


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if proxy.down:
                self.close_connection = True
                self.connection.close()
                return
            fault = proxy.take_fault(self.command, self.path)
            if fault is not None:
                payload = (
                    b"<?xml version='1.0'?><Error><Code>SlowDown</Code>"
                    b"<Message>injected fault</Message></Error>"
                )
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            upstream = http.client.HTTPConnection(
                proxy.upstream.hostname, proxy.upstream.port, timeout=30
            )
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A FaultProxy forwarding to `upstream` (http://host:port) on a free loopback port."""
    proxy = FaultProxy(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    with served_in_thread(server) as endpoint:
        proxy.endpoint = endpoint
        yield proxy
