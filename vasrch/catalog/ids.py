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
import pyarrow.compute as pc

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

    def positions(self, ids: Ids | Sequence[str | None] | np.ndarray) -> np.ndarray:
        """Row of each id (the first, if one repeats); -1 for None or an id not held. Hashed
        and checked a chunk at a time, so looking up every id of a catalog stays vectorised."""
        wanted = ids.values if isinstance(ids, Ids) else pa.array(_texts(ids), pa.string())
        out = np.full(len(wanted), -1, dtype=np.int64)
        if len(self) == 0:
            return out
        sorted_hashes, order = self._lookup
        for start in range(0, len(wanted), _HASH_ROWS):
            chunk = wanted.slice(start, _HASH_ROWS)
            out[start : start + len(chunk)] = self._rows_of(chunk, sorted_hashes, order)
        return out

    def _rows_of(self, chunk: pa.Array, sorted_hashes: np.ndarray, order: np.ndarray) -> np.ndarray:
        """positions() of one chunk: the hashes sorted before the binary search (a search in
        hash order reads the table in order), an id whose hash one row has checked by one
        vectorised comparison, ids whose hash several rows share one by one."""
        texts = chunk.to_numpy(zero_copy_only=False)
        present = np.asarray(chunk.is_valid())
        found = np.full(len(chunk), -1, dtype=np.int64)
        hashes = _hashes(np.where(present, texts, ""))
        by_hash = np.argsort(hashes)
        lo = np.empty(len(hashes), dtype=np.int64)
        lo[by_hash] = np.searchsorted(sorted_hashes, hashes[by_hash])
        last = len(sorted_hashes) - 1
        hit = present & (sorted_hashes[np.minimum(lo, last)] == hashes) & (lo <= last)
        shared = hit & (lo < last) & (sorted_hashes[np.minimum(lo + 1, last)] == hashes)
        single = np.flatnonzero(hit & ~shared)
        rows = order[lo[single]].astype(np.int64)
        asked = chunk.take(pa.array(single)).cast(self.values.type)
        same = np.asarray(pc.equal(self.values.take(pa.array(rows)), asked).fill_null(False))
        found[single[same]] = rows[same]
        for i in np.flatnonzero(shared).tolist():
            hi = np.searchsorted(sorted_hashes, hashes[i], side="right")
            for row in sorted(order[lo[i] : hi].tolist()):
                if self.values[row].as_py() == texts[i]:
                    found[i] = row
                    break
        return found


def _texts(ids: Sequence[str | None] | np.ndarray) -> list[str | None]:
    """The strings of `ids`, None for anything else (a NaN, a number)."""
    return [i if isinstance(i, str) else None for i in np.asarray(ids, dtype=object).tolist()]
