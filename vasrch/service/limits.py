"""Bounds on what a decode may cost: a pixel limit read from the header, and a few slots."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from vasrch.catalog.images import declared_pixels
from vasrch.service.errors import RequestError


def check_pixels(data: bytes, limit: int) -> None:
    """Refuse (413) an image whose header declares more than `limit` pixels, before decoding."""
    pixels = declared_pixels(data)
    if pixels is not None and pixels > limit:
        raise RequestError(
            413,
            f"image of {pixels} pixels is larger than the query limit of {limit} pixels "
            "(max_query_pixels); send a smaller image (1000 pixels a side is plenty)",
        )


class DecodeSlots:
    """At most `slots` images decode at once; a request waits up to `wait_s` for a slot, then
    gets 503 with Retry-After."""

    def __init__(self, slots: int, wait_s: float) -> None:
        self.slots = slots
        self.wait_s = wait_s
        self._semaphore: anyio.Semaphore | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold a slot for the body of the `async with`, or raise the 503 RequestError."""
        if self._semaphore is None:  # made on the event loop's thread, at first use
            self._semaphore = anyio.Semaphore(self.slots)
        try:
            self._semaphore.acquire_nowait()
        except anyio.WouldBlock:
            await self._wait()
        try:
            yield
        finally:
            self._semaphore.release()

    async def _wait(self) -> None:
        """Wait up to `wait_s` for a slot; 503 when none comes."""
        semaphore = self._semaphore
        assert semaphore is not None
        with anyio.move_on_after(self.wait_s):
            await semaphore.acquire()
            return
        retry = max(1, math.ceil(self.wait_s))
        raise RequestError(
            503,
            f"busy: {self.slots} images are being decoded and no slot freed within "
            f"{self.wait_s:g} s; retry in {retry} s",
            {"Retry-After": str(retry)},
        )
