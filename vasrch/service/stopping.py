"""How a service process stops: SIGTERM (what systemd, Docker and Kubernetes send) ends it as
Ctrl-C does, through Python, so that its `finally` blocks run (the workspace's service record is
removed or restored); SIGHUP, whose default would kill it just as abruptly, is answered without
stopping."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("vasrch.server")


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM (uvicorn raises the signal again once it has shut
    down gracefully); a BaseException, as KeyboardInterrupt, so no `except Exception` keeps it."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextmanager
def stopped_by_signals(on_hangup: Callable[[], None]) -> Iterator[None]:
    """While the block runs: SIGTERM raises Stopped, SIGHUP calls `on_hangup`; the previous
    handlers come back after it. Outside the main thread (where signals cannot be handled),
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, lambda signum, frame: on_hangup()),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
