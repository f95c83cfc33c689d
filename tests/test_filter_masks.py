"""Filter masks: a bounded cache (masks and bytes) that worker threads share safely, and
searchers that keep combining it with the hidden-products mask."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from vasrch.search.masks import MaskCache
from vasrch.workspace.hidden import hide, unhide


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch after (almost) every bytecode, so unguarded shared state breaks."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_the_cache_keeps_the_most_recent_masks_within_its_count_and_bytes() -> None:
    cache = MaskCache(max_masks=3, max_bytes=250)
    made: list[str] = []

    def mask(key: str, rows: int = 100):
        def make() -> np.ndarray:
            made.append(key)
            return np.ones(rows, bool)

        return cache.get(key, make)

    for key in ("a", "b", "a", "a"):
        mask(key)
    assert made == ["a", "b"] and len(cache) == 2 and cache.nbytes == 200
    mask("c")  # 300 bytes > 250: the least recently used ("b") goes
    assert len(cache) == 2 and cache.nbytes == 200
    mask("a")
    mask("b")
    assert made == ["a", "b", "c", "b"]
    big = mask("big", rows=1000)  # bigger than the whole budget: made, never kept
    assert big.shape == (1000,) and cache.nbytes <= 250
    mask("big", rows=1000)
    assert made[-2:] == ["big", "big"]


def test_searchers_share_their_mask_cache_across_threads(small_run, fast_switching) -> None:
    """16 threads ask for more distinct filters than the cache keeps (each a product id, so
    masks are dropped all the time): every answer is right, no thread fails."""
    from vasrch.search.searcher import open_run

    searcher = open_run(small_run.workspace)
    ids = list(searcher.index.ids)
    products = searcher.products.of(ids)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(200):
                at = (i * 7 + offset) % len(ids)
                mask = searcher.allowed({"product_id": [products[at]]})
                assert mask is not None and mask[at] and mask.sum() == 1
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert len(searcher._masks) <= 32


def test_filter_masks_still_leave_hidden_products_out(small_run) -> None:
    from vasrch.search.searcher import open_run

    searcher = open_run(small_run.workspace)
    category = searcher.products.describe(searcher.index.ids[:1])["category"][0]
    filters = {"category": [category]}
    shown = searcher.allowed(filters)
    victim = searcher.products.of(searcher.index.ids[np.flatnonzero(shown)[:1]])[0]
    try:
        hide(small_run.workspace, [victim], by="test")
        allowed = searcher.allowed(filters)
        assert allowed.sum() == shown.sum() - 1
        assert victim not in set(searcher.products.of(searcher.index.ids[allowed]))
    finally:
        unhide(small_run.workspace, [victim])
    assert (searcher.allowed(filters) == shown).all()
