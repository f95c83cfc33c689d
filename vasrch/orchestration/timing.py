"""Stage timings for the flows: `with timed("train_s", timings):` records a block's seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Record the wall-clock seconds the block takes as `timings[name]` (when it completes)."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
