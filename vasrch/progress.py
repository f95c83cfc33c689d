"""An optional in-process progress sink that tasks report to (the CLI's progress bar)."""

from __future__ import annotations

import threading
from collections.abc import Callable

_lock = threading.Lock()
_sink: Callable[[str, int, int | None], None] | None = None


def set_sink(sink: Callable[[str, int, int | None], None] | None) -> None:
    """Install `sink(stage, advance, total)`; None removes it."""
    global _sink
    with _lock:
        _sink = sink


def report(stage: str, advance: int = 0, total: int | None = None) -> None:
    """Advance `stage` by `advance` items and, when `total` is given, announce that many more
    items of it (a stage that runs twice in a flow adds both counts); no-op without a sink."""
    sink = _sink
    if sink is not None:
        sink(stage, advance, total)
