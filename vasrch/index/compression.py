"""How an index holds its vectors in memory: full float32, or PCA-reduced int8 codes within a
bytes-per-photo budget (`search.max_bytes_per_photo`).

Compressed, the index scans the codes of the probed clusters for a shortlist and re-ranks it
exactly from the full vectors, which stay in the run folder and are memory-mapped, as Qdrant
keeps quantized vectors in memory and originals on disk. The codes are PCA coordinates (the
directions that carry most of the vectors' variance), each scalar-quantized to one byte
between robust per-dimension bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vasrch.atomic_files import atomic_path
from vasrch.errors import ConfigError
from vasrch.index.principal_axes import principal_axes, sample_rows

AUTO_FULL_BELOW = 200_000  # `auto`: full float32 below this many photos
AUTO_BYTES_PER_PHOTO = 400  # `auto` budget above it (10M photos in about 4 GB)
OTHER_BYTES_PER_PHOTO = 64  # what a photo costs besides its vector: ids, lookups, distance
MIN_DIMS = 16
_FIT_ROWS = 20_000  # vectors sampled to fit the PCA and the quantization bounds
_ENCODE_ROWS = 65_536
_BOUNDS = (0.001, 0.999)  # quantiles clipped to: a few outliers do not widen every step
RERANK_MIN = 100  # shortlist re-ranked exactly: at least this many rows a query ...
RERANK_FACTOR = 8  # ... or this many times top_n ...
# ... or this share of the rows its probes scan: on 100,000 catalog-like photos at 32 probes
# (5,000 rows scanned) a fixed 100 kept recall@10 at 0.87 where float32 reached 0.98; 400
# reached 0.97, 1,000 0.98 (benchmarks/BENCHMARKS.md, issue 22)
RERANK_SHARE = 0.1


def shortlist_size(n: int, k: int, top_n: int, probes: int) -> int:
    """Rows a compressed search re-ranks exactly for one query: RERANK_MIN, RERANK_FACTOR x
    top_n or RERANK_SHARE of the rows `probes` of k clusters hold on average, the most."""
    scanned = probes * n / max(k, 1)
    return min(n, max(RERANK_MIN, RERANK_FACTOR * top_n, math.ceil(RERANK_SHARE * scanned)))


@dataclass(frozen=True)
class VectorStorage:
    """What a run chose for its vectors in memory, and why."""

    method: Literal["float32", "pca-int8"]
    dims: int  # values a photo keeps in memory (the index's dimension for float32)
    bytes_per_photo: int  # vector bytes a photo keeps in memory
    budget: int | None  # the bytes-per-photo budget it was chosen under (None: none)
    reason: str

    @property
    def compressed(self) -> bool:
        """Whether vectors are held as codes (and re-ranked from the full ones on disk)."""
        return self.method != "float32"


def choose_storage(n: int, dim: int, max_bytes_per_photo: int | Literal["auto"]) -> VectorStorage:
    """Full float32 when the budget allows it (`auto`: below AUTO_FULL_BELOW photos), else as
    many PCA dimensions as int8 codes as fit the budget beside the ids."""
    full = 4 * dim
    if max_bytes_per_photo == "auto":
        if n < AUTO_FULL_BELOW:
            reason = f"auto: {n:,} photos, below {AUTO_FULL_BELOW:,}: full float32 vectors"
            return VectorStorage("float32", dim, full, None, reason)
        budget = AUTO_BYTES_PER_PHOTO
        why = f"auto: {n:,} photos, at least {AUTO_FULL_BELOW:,}: a budget of {budget} B/photo"
    else:
        budget = int(max_bytes_per_photo)
        why = f"search.max_bytes_per_photo = {budget}"
    room = budget - OTHER_BYTES_PER_PHOTO
    if room >= full:
        return VectorStorage("float32", dim, full, budget, f"{why}: full float32 vectors fit")
    dims = min(dim, room // 8 * 8)
    if dims < MIN_DIMS:
        raise ConfigError(
            f"search.max_bytes_per_photo = {budget} leaves {room} bytes a photo for its vector "
            f"after {OTHER_BYTES_PER_PHOTO} for its ids; give at least "
            f"{OTHER_BYTES_PER_PHOTO + MIN_DIMS} (or auto)"
        )
    reason = f"{why}: {dims} PCA dimensions as int8 codes, re-ranked from float32 on disk"
    return VectorStorage("pca-int8", dims, dims, budget, reason)


def streamed(n: int, max_bytes_per_photo: int | Literal["auto"]) -> bool:
    """Whether a run of n photos trains streamed, its full vectors in files rather than in
    memory: whenever its budget may hold them compressed."""
    return max_bytes_per_photo != "auto" or n >= AUTO_FULL_BELOW


@dataclass(frozen=True, eq=False)
class Codec:
    """PCA then one byte a dimension: code = round((z - low) / step) - 128 for the PCA
    coordinates z of a vector."""

    mean: np.ndarray  # (dim,) float32
    components: np.ndarray  # (dims, dim) float32, orthonormal rows
    low: np.ndarray  # (dims,) float32
    step: np.ndarray  # (dims,) float32

    @property
    def dims(self) -> int:
        """Values a code holds."""
        return int(self.components.shape[0])

    def _coordinates(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T

    def encode(self, x: np.ndarray) -> np.ndarray:
        """int8 codes of the rows of `x`, in bounded chunks."""
        codes = np.empty((x.shape[0], self.dims), dtype=np.int8)
        for start in range(0, x.shape[0], _ENCODE_ROWS):
            z = self._coordinates(x[start : start + _ENCODE_ROWS])
            q = np.rint((z - self.low) / self.step) - 128
            codes[start : start + len(z)] = np.clip(q, -128, 127)
        return codes

    def queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries ready to score codes: q @ codes.T is each code's similarity to q, up to a
        constant per query (so rankings of one query's codes are kept)."""
        return np.ascontiguousarray(self._coordinates(queries) * self.step, dtype=np.float32)

    def save(self, path: Path) -> None:
        """Write the codec as a .npz (arrays only)."""
        arrays = {"mean": self.mean, "components": self.components}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays, low=self.low, step=self.step)

    @classmethod
    def load(cls, path: Path) -> Codec:
        """The codec `save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["components"], data["low"], data["step"])


def fit_codec(vectors: np.ndarray, dims: int, seed: int = 0) -> Codec:
    """PCA of a seeded sample of `vectors` (its `dims` leading directions) and per-dimension
    quantization bounds of the sample's coordinates."""
    sample = np.asarray(vectors[sample_rows(vectors.shape[0], _FIT_ROWS, seed)], dtype=np.float32)
    axes = principal_axes(sample, np.arange(len(sample)))
    components = np.ascontiguousarray(axes.directions[: min(dims, vectors.shape[1])])
    centred = sample - axes.mean
    z = centred @ components.T
    low, high = np.quantile(z, _BOUNDS, axis=0)
    step = np.maximum(high - low, 1e-12) / 255
    return Codec(axes.mean, components, low.astype(np.float32), step.astype(np.float32))
