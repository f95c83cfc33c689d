"""A bounded, thread-safe cache of filter masks: the service searches from worker threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

MAX_MASKS = 32  # masks kept for repeated filters
MAX_MASK_BYTES = 64 << 20  # and their bytes together (a mask is one byte per index row)


class MaskCache:
    """Masks by key, the least recently used dropped first to stay within `max_masks` masks
    and `max_bytes` bytes; a mask bigger than `max_bytes` is made each time, never kept."""

    def __init__(self, max_masks: int = MAX_MASKS, max_bytes: int = MAX_MASK_BYTES) -> None:
        self.max_masks = max_masks
        self.max_bytes = max_bytes
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The mask kept under `key`, else `make()`'s (made outside the lock, then kept)."""
        with self._lock:
            mask = self._masks.get(key)
            if mask is not None:
                self._masks.move_to_end(key)
                return mask
        mask = make()
        with self._lock:
            self._keep(key, mask)
        return mask

    def _keep(self, key: str, mask: np.ndarray) -> None:
        if key in self._masks or mask.nbytes > self.max_bytes:
            return
        self._masks[key] = mask
        self._bytes += mask.nbytes
        while len(self._masks) > self.max_masks or self._bytes > self.max_bytes:
            _, dropped = self._masks.popitem(last=False)
            self._bytes -= dropped.nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._masks)

    @property
    def nbytes(self) -> int:
        """Bytes of the masks kept."""
        with self._lock:
            return self._bytes
