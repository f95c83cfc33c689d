"""Batched feature extraction into Parquet shards keyed by sha256, and reading them back."""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vasrch.addresses import is_url
from vasrch.atomic_files import atomic_path
from vasrch.catalog.images import DEFAULT_MAX_PIXELS, Decoded, Rejection, decode_image
from vasrch.catalog.scan import DEFAULT_MAX_FILE_BYTES, Scan
from vasrch.catalog.sources import Fetching, read_photo
from vasrch.features.duplicate_prints import make_print
from vasrch.features.matrices import finish_matrix, new_matrix
from vasrch.hashing import TooLargeError
from vasrch.layout import FeatureCacheLayout, WorkspaceLayout

if TYPE_CHECKING:
    from vasrch.features.backbones import Backbone

REJECTION_COLUMNS = ["sha256", "image_id", "reason"]
SUMMARY_REJECTION_COLUMNS = ["image_id", "row", "reason", "retry"]
# Reasons that older versions cached although the same bytes may pass later: read as retried.
_LEGACY_RETRIED = ("cannot read file", "file changed since the catalog scan")
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class ChunkResult:
    """What one extraction chunk wrote, and the rows it could not read this time (sha256,
    image_id, reason): those are not cached, so the next run tries them again."""

    extracted: int
    rejected: int
    shard: str | None
    seconds: float
    retry: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class ExtractSummary:
    """Counts of one extraction over a catalog (seen = new + reused + rejected); `rejections`
    holds every rejected image of it (image_id, row: its manifest row or null, reason, retry:
    whether the next run tries it again) and `warnings` the folders the scan left out."""

    seen: int
    new: int
    reused: int
    rejected: int
    seconds: float
    fingerprint: str
    cache_dir: Path
    rejections: pd.DataFrame = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        """New images embedded per second; 0.0 when `seconds` is 0."""
        return self.new / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """The counts, seconds, rate and fingerprint as a plain dict (seconds and rate rounded);
        without the cache folder and the rejections."""
        return {
            "seen": self.seen,
            "new": self.new,
            "reused": self.reused,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 2),
            "fingerprint": self.fingerprint,
        }


def cache_dir_for(workspace: Path, backbone_fingerprint: str) -> Path:
    """The feature cache of one backbone in a workspace."""
    return WorkspaceLayout(Path(workspace)).features(backbone_fingerprint).root


def shard_paths(cache_dir: Path) -> list[Path]:
    """The cache's complete feature shards."""
    return FeatureCacheLayout(Path(cache_dir)).shards()


def read_rejections(cache_dir: Path) -> pd.DataFrame:
    """Every permanent rejection recorded in this cache (bytes that are not a decodable image):
    sha256, image_id, reason."""
    frames = [pd.read_parquet(p) for p in FeatureCacheLayout(Path(cache_dir)).rejections()]
    if not frames:
        return pd.DataFrame(columns=REJECTION_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table = table[~table["reason"].str.startswith(_LEGACY_RETRIED)]
    return table.drop_duplicates("sha256").reset_index(drop=True)


def cached_hashes(cache_dir: Path) -> tuple[set[str], set[str]]:
    """(sha256s with a vector, sha256s rejected) in the cache."""
    done: set[str] = set()
    for p in shard_paths(cache_dir):
        done.update(pq.read_table(p, columns=["sha256"]).column("sha256").to_pylist())
    return done, set(read_rejections(cache_dir)["sha256"])


def plan_chunks(catalog: pd.DataFrame, cache_dir: Path, shard_size: int) -> list[pd.DataFrame]:
    """Catalog rows whose bytes have no vector and no rejection yet, one row per sha256,
    split into chunks of at most `shard_size`."""
    done, rejected = cached_hashes(cache_dir)
    todo = catalog[~catalog["sha256"].isin(done | rejected)].drop_duplicates("sha256")
    todo = todo[["image_id", "path", "sha256"]].reset_index(drop=True)
    return [todo.iloc[i : i + shard_size] for i in range(0, len(todo), shard_size)]


Loaded = tuple[Decoded, np.ndarray] | Rejection


def _read_checked(
    path: str, sha256: str, max_file_bytes: int, fetching: Fetching
) -> bytes | Rejection:
    """The bytes the scan hashed (bounded; a URL downloaded), or why not: read errors and bytes
    changed since the scan are retried by the next run."""
    try:
        data = read_photo(path, max_file_bytes, fetching, sha256)
    except TooLargeError:
        return Rejection(
            f"file changed since the catalog scan (now over features.max_file_bytes "
            f"{max_file_bytes}); retried next run",
            retry=True,
        )
    except OSError as err:
        return Rejection(f"cannot read file: {err.strerror or err}; retried next run", retry=True)
    if hashlib.sha256(data).hexdigest() != sha256:
        return Rejection("file changed since the catalog scan; retried next run", retry=True)
    return data


def _decode_printed(data: bytes | Rejection, size: int, max_pixels: int) -> Loaded:
    """Decode and print (duplicate_prints) the bytes read; a decode failure is permanent."""
    if isinstance(data, Rejection):
        return data
    decoded = decode_image(data, size, max_pixels)
    if isinstance(decoded, Rejection):
        return decoded
    return decoded, make_print(decoded.pixels, decoded.width, decoded.height)


Item = tuple[str, str, str]  # image_id, path, sha256
Reader = Callable[[str, str], bytes | Rejection]  # (path, sha256) -> bytes, or why not


def _decoded_batches(
    items: Iterable[Item],
    read: Reader,
    fetch_workers: int | None,
    size: int,
    batch_size: int,
    workers: int,
    max_pixels: int,
) -> Iterator[list[tuple[Item, Loaded]]]:
    """Read, decode and print in a thread pool, up to two batches ahead of the consumer (the
    model; one batch ahead until the first batch is out, so a stream's first batch waits for
    two batches of items, not three); with `fetch_workers` (the items are URLs), that many more
    threads read them ahead of the decoders. The first batch is decoded on every core: the model
    has nothing to do until it is out, and one decoder would leave the other cores idle."""
    it = iter(items)
    with ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="vasrch-decode"))
        opening = stack.enter_context(
            ThreadPoolExecutor(
                max(workers, os.cpu_count() or 1), thread_name_prefix="vasrch-decode-first"
            )
        )
        fetch_pool = (
            stack.enter_context(
                ThreadPoolExecutor(fetch_workers, thread_name_prefix="vasrch-fetch")
            )
            if fetch_workers
            else None
        )
        pending: deque[tuple[Item, Future[Loaded]]] = deque()

        def load(decoders: ThreadPoolExecutor, path: str, sha256: str) -> Future[Loaded]:
            """Read and decode in `decoders`; a URL is downloaded by the fetch pool first, the
            decoder waiting for its bytes."""
            if fetch_pool is None:
                return decoders.submit(
                    lambda: _decode_printed(read(path, sha256), size, max_pixels)
                )
            fetched = fetch_pool.submit(read, path, sha256)
            return decoders.submit(lambda: _decode_printed(fetched.result(), size, max_pixels))

        def fill(ahead: int, decoders: ThreadPoolExecutor) -> None:
            while len(pending) < ahead and (item := next(it, None)) is not None:
                pending.append((item, load(decoders, item[1], item[2])))

        fill(batch_size, opening)
        ahead = batch_size
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            loaded = [(item, fut.result()) for item, fut in batch]
            fill(ahead, pool)  # after the wait, so that the opening batch has every core
            ahead = 2 * batch_size
            yield loaded


def shard_name(sha256s: Iterable[str]) -> str:
    """Deterministic shard stem from its members, so a retried chunk rewrites the same file."""
    return hashlib.sha256("".join(sorted(sha256s)).encode()).hexdigest()[:16]


def _fixed_size_lists(matrix: np.ndarray, kind: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), kind), matrix.shape[1])


def _shard_table(
    ids: list[str],
    shas: list[str],
    sizes: list[tuple[int, int]],
    vecs: np.ndarray,
    prints: np.ndarray,
) -> pa.Table:
    return pa.table(
        {
            "sha256": pa.array(shas, pa.string()),
            "image_id": pa.array(ids, pa.string()),
            "width": pa.array([w for w, _ in sizes], pa.int32()),
            "height": pa.array([h for _, h in sizes], pa.int32()),
            "feature": _fixed_size_lists(vecs, pa.float32()),
            "print": _fixed_size_lists(prints, pa.uint8()),
        }
    )


def auto_decode_workers() -> int:
    """Decode threads for `features.decode_workers: auto`: half the cores, at least one. The
    model's own threads use the other half; on 2 cores a second decoder only competes with the
    model (pipeline 0.78-0.79 of the model alone with two decoders, 0.82 with one)."""
    return max(1, (os.cpu_count() or 2) // 2)


def extract_chunk(
    rows: pd.DataFrame,
    backbone: Backbone,
    cache_dir: Path,
    decode_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_batch: ProgressFn | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    fetching: Fetching | None = None,
) -> ChunkResult:
    """Decode (`decode_workers` threads; None: auto_decode_workers), embed, print
    (duplicate_prints) and write one shard (plus its permanent rejections) atomically; rows that
    could not be read this time come back in `retry` and are not cached. URL rows are read as
    `fetching` says."""
    fetching = fetching or Fetching()
    items = rows[["image_id", "path", "sha256"]].itertuples(index=False, name=None)
    remote = bool(rows["path"].map(is_url).any())
    read = functools.partial(_read_checked, max_file_bytes=max_file_bytes, fetching=fetching)
    return extract_items(
        items,
        read,
        backbone,
        cache_dir,
        decode_workers,
        max_pixels,
        on_batch,
        fetching.workers if remote else None,
    )


def extract_items(
    items: Iterable[Item],
    read: Reader,
    backbone: Backbone,
    cache_dir: Path,
    decode_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_batch: ProgressFn | None = None,
    fetch_workers: int | None = None,
) -> ChunkResult:
    """extract_chunk's work on `items` (image_id, path, sha256), each read by `read` (in
    `fetch_workers` threads of its own when given): one shard, named after every item's
    sha256."""
    start = time.perf_counter()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    shas: list[str] = []
    sizes: list[tuple[int, int]] = []
    vectors: list[np.ndarray] = []
    prints: list[np.ndarray] = []
    rejected: list[tuple[str, str, str]] = []
    retry: list[tuple[str, str, str]] = []
    members: list[str] = []
    size = backbone.spec.input_size
    workers = decode_workers or auto_decode_workers()
    batches = _decoded_batches(
        items, read, fetch_workers, size, backbone.batch_size, workers, max_pixels
    )
    for batch in batches:
        members += [item[2] for item, _ in batch]
        good = [(item, *d) for item, d in batch if not isinstance(d, Rejection)]
        for item, d in batch:
            if isinstance(d, Rejection):
                (retry if d.retry else rejected).append((item[2], item[0], d.reason))
        if good:
            vectors.append(backbone.embed(np.stack([d.pixels for _, d, _ in good])))
            prints += [p for _, _, p in good]
            ids += [item[0] for item, _, _ in good]
            shas += [item[2] for item, _, _ in good]
            sizes += [(d.width, d.height) for _, d, _ in good]
        if on_batch:
            on_batch(len(batch))
    stem = shard_name(members)
    if rejected:
        with atomic_path(FeatureCacheLayout(cache_dir).rejected(stem)) as tmp:
            pd.DataFrame(rejected, columns=REJECTION_COLUMNS).to_parquet(tmp, index=False)
    shard = None
    if vectors:
        shard = FeatureCacheLayout(cache_dir).shard(stem)
        with atomic_path(shard) as tmp:
            table = _shard_table(ids, shas, sizes, np.concatenate(vectors), np.stack(prints))
            pq.write_table(table, tmp, use_dictionary=False)  # every value is unique
    return ChunkResult(
        len(ids),
        len(rejected) + len(retry),
        shard.name if shard else None,
        time.perf_counter() - start,
        tuple(retry),
    )


def iter_shards(cache_dir: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Stream the cache's shards one table at a time."""
    for p in shard_paths(cache_dir):
        yield pq.read_table(p, columns=columns)


def feature_matrix(table: pa.Table, column: str = "feature") -> np.ndarray:
    """A fixed-size-list column of a shard (`feature` by default) as a (rows, dim) array."""
    col = table.column(column).combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)


def load_vectors(
    cache_dir: Path, catalog: pd.DataFrame, out: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids, float32 matrix) for the catalog images that have a vector, in catalog order.
    Shards are streamed into a matrix allocated once at its final size (with `out`, a .npy
    file there, returned memory-mapped: catalogs larger than memory); images with the same
    bytes share one vector."""
    return _load_column(cache_dir, catalog, "feature", np.float32, out)


def load_prints(
    cache_dir: Path, catalog: pd.DataFrame, out: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids, uint8 prints) for the catalog images that have a vector, in catalog order, as
    `load_vectors` gives their vectors (with `out`, streamed into that .npy file likewise)."""
    return _load_column(cache_dir, catalog, "print", np.uint8, out)


def embedded_ids(cache_dir: Path, catalog: pd.DataFrame) -> np.ndarray:
    """The image ids of the catalog images that have a vector, in catalog order (the ids
    `load_vectors` gives, without reading a vector)."""
    return catalog["image_id"].to_numpy()[_embedded(cache_dir, catalog)]


def _embedded(cache_dir: Path, catalog: pd.DataFrame) -> np.ndarray:
    done, _ = cached_hashes(cache_dir)
    return catalog["sha256"].isin(done).to_numpy()


def _load_column(
    cache_dir: Path, catalog: pd.DataFrame, column: str, dtype: type, out: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    has = _embedded(cache_dir, catalog)
    slots_of: dict[str, list[int]] = {}
    for slot, sha in enumerate(catalog["sha256"].to_numpy()[has]):
        slots_of.setdefault(sha, []).append(slot)
    ids = catalog["image_id"].to_numpy()[has]
    matrix: np.ndarray | None = None
    for table in iter_shards(cache_dir, ["sha256", column]):
        values = feature_matrix(table, column)
        if matrix is None:
            matrix = new_matrix((len(ids), values.shape[1]), dtype, out)
        for j, sha in enumerate(table.column("sha256").to_pylist()):
            for slot in slots_of.get(sha, ()):
                matrix[slot] = values[j]
    if matrix is None:
        return ids[:0], np.zeros((0, 0), dtype=dtype)
    return ids, finish_matrix(matrix, out)


def summarize(
    scan: Scan,
    results: list[ChunkResult],
    cache_dir: Path,
    fingerprint: str,
    seconds: float,
) -> ExtractSummary:
    """Counts for a scanned catalog after its chunks ran: new, reused from the cache, and
    rejected, with every rejected image, its manifest row and its reason: by the scan and by
    this run's reads (retried next run), and by the cache (bytes that do not decode;
    permanent)."""
    catalog = scan.table[["image_id", "sha256"]]
    cached = read_rejections(cache_dir).drop(columns="image_id").drop_duplicates("sha256")
    retried = pd.DataFrame([r for res in results for r in res.retry], columns=REJECTION_COLUMNS)
    retried = retried.drop_duplicates("sha256").drop(columns="image_id")
    unread = pd.concat(
        [
            catalog.merge(cached, on="sha256").assign(retry=False),
            catalog.merge(retried, on="sha256").assign(retry=True),
        ],
        ignore_index=True,
    ).drop_duplicates("image_id")
    unread["row"] = unread["image_id"].map(scan.row_of).astype("Int64")
    unread["reason"] = [
        scan.reason(i, r) for i, r in zip(unread["image_id"], unread["reason"], strict=True)
    ]
    rejections = pd.concat(
        [unread[SUMMARY_REJECTION_COLUMNS], scan.rejected.assign(retry=True)],
        ignore_index=True,
    )[SUMMARY_REJECTION_COLUMNS].sort_values(["image_id", "row"], ignore_index=True)
    new = sum(r.extracted for r in results)
    return ExtractSummary(
        seen=len(catalog) + len(scan.rejected),
        new=new,
        reused=len(catalog) - len(unread) - new,
        rejected=len(rejections),
        seconds=seconds,
        fingerprint=fingerprint,
        cache_dir=Path(cache_dir),
        rejections=rejections,
        warnings=list(scan.warnings),
    )
