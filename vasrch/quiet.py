"""Keeping native libraries' start-up noise off a terminal (TensorFlow's absl and CUDA lines)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Set (to 1) by the CLI unless -v: native start-up messages then go to /dev/null.
QUIET_NATIVE_ENV = "VASRCH_QUIET_NATIVE"


@contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block when VASRCH_QUIET_NATIVE=1: C++
    libraries log there before any Python setting can reach them. Python's own stderr writes
    in the block are silenced too, so keep it to imports and device start-up."""
    if os.environ.get(QUIET_NATIVE_ENV) != "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
