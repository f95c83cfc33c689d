"""Image and product ids held compactly: one Arrow string array (about the ids' UTF-8 bytes
plus 4 bytes a row), never one Python object per row.

Looking an id up goes through its 64-bit hash: the hashes sorted once (on the first lookup)
with the rows they belong to, then a binary search, checked against the stored id; 12 bytes a
row where a dict or a pandas Index would hold about 100.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

_HASH_ROWS = 1 << 20  # ids turned into Python strings at once while hashing


def _hashes(values: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


class Ids:
    """A read-only column of strings: `take`, `positions` of given ids, and NumPy/pandas
    conversion (`np.asarray(ids)` is an object array) for small selections."""

    def __init__(self, values: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
        self.values = values.cast(pa.large_string()) if values.nbytes > 1 << 31 else values

    @classmethod
    def of(cls, ids: Ids | Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> Ids:
        """Ids from any sequence of strings (kept as is when already Ids)."""
        if isinstance(ids, Ids):
            return ids
        if isinstance(ids, pa.Array | pa.ChunkedArray):
            return cls(ids)
        return cls(pa.array(np.asarray(ids, dtype=object), type=pa.string()))

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values.to_pylist())

    def __getitem__(self, key: int | slice | np.ndarray | Sequence[int]) -> str | Ids:
        """One id (an int), or the Ids at these positions (a slice, an int or bool array)."""
        if isinstance(key, int | np.integer):
            return self.values[int(key)].as_py()
        if isinstance(key, slice):
            return Ids(self.values[key])
        return self.take(np.asarray(key))

    def take(self, rows: np.ndarray) -> Ids:
        """The ids at these positions (or where a boolean mask is set)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Ids(self.values.take(pa.array(rows.astype(np.int64, copy=False))))

    def __array__(self, dtype: object = None, copy: bool | None = None) -> np.ndarray:
        out = self.values.to_numpy(zero_copy_only=False)
        return out.astype(object, copy=False) if dtype is None else out.astype(dtype)

    def tolist(self) -> list[str]:
        """The ids as Python strings."""
        return self.values.to_pylist()

    @property
    def nbytes(self) -> int:
        """Bytes held (the strings and their offsets, plus the lookup once built)."""
        lookup = self.__dict__.get("_lookup")
        return self.values.nbytes + (0 if lookup is None else sum(a.nbytes for a in lookup))

    @cached_property
    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted hashes, the row of each), built in bounded chunks."""
        n = len(self)
        hashes = np.empty(n, dtype=np.uint64)
        for start in range(0, n, _HASH_ROWS):
            chunk = self.values.slice(start, _HASH_ROWS).to_numpy(zero_copy_only=False)
            hashes[start : start + len(chunk)] = _hashes(chunk)
        order = np.argsort(hashes, kind="stable").astype(np.int64 if n >= 2**31 else np.int32)
        return hashes[order], order

    def positions(self, ids: Sequence[str | None] | np.ndarray) -> np.ndarray:
        """Row of each id (the first, if one repeats); -1 for None or an id not held."""
        wanted = np.asarray(ids, dtype=object)
        out = np.full(len(wanted), -1, dtype=np.int64)
        present = np.array([isinstance(i, str) for i in wanted], dtype=bool)
        if not present.any() or len(self) == 0:
            return out
        sorted_hashes, order = self._lookup
        targets = wanted[present]
        hashes = _hashes(targets)
        lo = np.searchsorted(sorted_hashes, hashes, side="left")
        hi = np.searchsorted(sorted_hashes, hashes, side="right")
        found = np.full(len(targets), -1, dtype=np.int64)
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            for row in sorted(order[a:b].tolist()):
                if self.values[row].as_py() == targets[i]:
                    found[i] = row
                    break
        out[present] = found
        return out
