"""Stage 5, search: a published run and query photos in, ranked products out.

`parameters` resolves top_n and probes once (argument, config, the run's calibration),
`searcher` opens a run and ranks the products that look like each query, `results` gives every
answer the same table shape, whoever computed it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Searcher", "open_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vasrch.search import searcher

        return getattr(searcher, name)
    raise AttributeError(f"module 'vasrch.search' has no attribute {name!r}")
