"""vasrch: product image search for e-commerce catalogs.

The four functions of the original library are imported lazily, so `import vasrch` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "extract_features",
    "get_optimal_num_clusters",
    "search_similar_images",
    "train_clusters",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vasrch import api

        return getattr(api, name)
    raise AttributeError(f"module 'vasrch' has no attribute {name!r}")
