"""The search index: vectors grouped by KMeans cluster, ranked multi-probe cosine search.

Search projects the queries (when the index holds a PCA projection), ranks the clusters by the
distance of each query to their KMeans centroids (the rule that assigned the vectors, so
`probes=1` is the cluster `KMeans.predict` gives; with the unit centroids of spherical k-means
this is the cosine ranking), takes the `probes` best, and ranks the members of those clusters by
cosine similarity. Many queries are answered at once: the queries
probing a cluster are gathered and multiplied against that cluster's block of vectors in one
matrix product, and only the running top-n of each query is kept (argpartition, no full sorts),
so memory stays bounded whatever the number of queries or the size of the catalog.

On disk (one folder): centroids.npy, vectors.npy (grouped by cluster), offsets.npy,
assignments.parquet (image_id, cluster, distance, and product_id when some product has several
photos; in stored order), projection.npz when the index has one, print_windows.npy,
print_scales.npy, print_thumbs.npy and print_colours.npy (the duplicate prints prepared for
scoring, duplicate_prints) when it was built with them, codes.npy and codec.npz when it is
compressed, and index.json (format version, backbone fingerprint, k, dim, input_dim, n,
has_projection, has_prints, expansion, storage). Nothing is pickled, and the vectors and prints
are memory-mapped by default, so loading is cheap; a long-lived server reads the vectors into
memory instead, so that a file changed under it cannot change (or crash) it, and leaves the
prints out (queries never read them).

Within a memory budget (`search.max_bytes_per_photo`, see compression) the index holds int8
PCA codes instead: the probed clusters' codes give each query a shortlist, re-ranked exactly
from the full vectors, which a server then keeps memory-mapped from the run folder (a run's
files are hashed and never rewritten).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vasrch.atomic_files import atomic_path, write_text_atomic
from vasrch.catalog.ids import Ids
from vasrch.catalog.products import Products
from vasrch.errors import DataError, RunIntegrityError
from vasrch.features.duplicate_prints import Prints, prepare
from vasrch.features.matrices import finish_matrix, new_matrix
from vasrch.index.clustering import Projection, l2_normalise
from vasrch.index.compression import (
    Codec,
    VectorStorage,
    choose_storage,
    fit_codec,
    shortlist_size,
)
from vasrch.layout import IndexLayout

FORMAT_VERSION = 1
# Largest score block (queries x members) computed at once: 4M float32 = 16 MiB (+ 32 MiB for
# argpartition's int64 indices).
_BLOCK_ELEMENTS = 1 << 22
_MIN_COLUMNS = 4096
CHUNK_ROWS = 65_536  # rows grouped at once when an index is built
AUGMENT_PROBES = 8  # clusters searched for each vector's neighbours in database augmentation


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Ranked answers, best first: `ids` (q, top_n) object array of str, `scores` (q, top_n)
    float32 cosine similarities; top_n is at most the number of indexed images. A query with
    fewer answers (small probed clusters, itself excluded) is padded at the end with id "" and
    score -inf."""

    ids: np.ndarray
    scores: np.ndarray

    def to_frame(self, query_ids: Sequence[str]) -> pd.DataFrame:
        """Long table (image_id, rank, neighbour_id, score); rank starts at 1; padding dropped."""
        q, top_n = self.ids.shape
        if len(query_ids) != q:
            raise ValueError(f"got {len(query_ids)} query ids for {q} result rows")
        valid = np.isfinite(self.scores).ravel()
        image_id = np.repeat(np.asarray(query_ids, dtype=object), top_n)
        rank = np.tile(np.arange(1, top_n + 1, dtype=np.int32), q)
        return pd.DataFrame(
            {
                "image_id": image_id[valid],
                "rank": rank[valid],
                "neighbour_id": self.ids.ravel()[valid],
                "score": self.scores.ravel()[valid],
            }
        )


def _merge_top(
    best_s: np.ndarray, best_r: np.ndarray, qi: np.ndarray, s: np.ndarray, row0: int
) -> None:
    """Fold the score block `s` (len(qi), m) of rows row0.. into the running top-n of queries qi."""
    top_n = best_s.shape[1]
    m = s.shape[1]
    if m > top_n:
        part = np.argpartition(s, m - top_n, axis=1)[:, m - top_n :]
        s = np.take_along_axis(s, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(m), s.shape)
    all_s = np.concatenate([best_s[qi], s], axis=1)
    all_r = np.concatenate([best_r[qi], part + row0], axis=1)
    keep = np.argpartition(all_s, all_s.shape[1] - top_n, axis=1)[:, -top_n:]
    best_s[qi] = np.take_along_axis(all_s, keep, axis=1)
    best_r[qi] = np.take_along_axis(all_r, keep, axis=1)


@dataclass(eq=False)
class SearchIndex:
    """Vectors grouped by cluster: members of cluster c are rows offsets[c]:offsets[c+1]."""

    centroids: np.ndarray  # (k, dim) float32, the KMeans centroids in the index space
    vectors: np.ndarray  # (n, dim) float32, projected and grouped by cluster
    ids: Ids  # (n,) image ids, same order as vectors
    offsets: np.ndarray  # (k + 1,) int64
    distances: np.ndarray  # (n,) float32 Euclidean distance to own centroid (KMeans.transform)
    fingerprint: str  # backbone fingerprint of the vectors
    projection: Projection | None = None
    expansion: int = 0  # alpha query expansion: results folded back into the query (0: off)
    expansion_alpha: float = 3.0  # weight of a folded-in result: its similarity ** alpha
    # Product of each stored row when some product has several photos: answers then hold
    # distinct products (each by its best photo), and leaving a row out leaves its product out.
    products: Ids | None = None
    prints: Prints | None = None  # duplicate prints ready for scoring, same order as vectors
    # Compressed (search.max_bytes_per_photo): the codes scanned in memory, the codec that made
    # them; `vectors` are then the full ones memory-mapped from disk, read to re-rank shortlists.
    codes: np.ndarray | None = None  # (n, codec.dims) int8, same order as vectors
    codec: Codec | None = None
    storage: VectorStorage | None = None  # what was chosen and why (None: an older index)

    def __post_init__(self) -> None:
        self.ids = Ids.of(self.ids)
        self.products = None if self.products is None else Ids.of(self.products)

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])

    @property
    def n(self) -> int:
        """Number of stored vectors (catalog images)."""
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """Dimension of the stored (projected) vectors."""
        return int(self.vectors.shape[1])

    @property
    def input_dim(self) -> int:
        """Dimension of the feature vectors that queries must have."""
        return self.projection.input_dim if self.projection is not None else self.dim

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Members of each cluster, (k,) int64."""
        return np.diff(self.offsets)

    @property
    def labels(self) -> np.ndarray:
        """Cluster of each stored row."""
        return np.repeat(np.arange(self.k, dtype=np.int32), self.cluster_sizes)

    @cached_property
    def _groups(self) -> tuple[np.ndarray, int]:
        """(product code of each stored row, most photos of one product)."""
        codes = self.products.values.dictionary_encode().indices.to_numpy().astype(np.int64)
        return codes, int(np.bincount(codes).max(initial=1))

    @cached_property
    def _half_sq_norms(self) -> np.ndarray:
        return 0.5 * np.einsum("ij,ij->i", self.centroids, self.centroids)

    def centroid_affinity(self, queries: np.ndarray) -> np.ndarray:
        """How near each prepared query is to its nearest centroid (the probe rule's score;
        low: the query sits between clusters, and its neighbours spread over many)."""
        return (queries @ self.centroids.T - self._half_sq_norms).max(axis=1)

    def check_fingerprint(self, expected: str) -> None:
        """Refuse vectors made by another backbone than the one this index was built from."""
        if expected != self.fingerprint:
            raise DataError(
                f"backbone fingerprint mismatch: the index was built from features with "
                f"fingerprint {self.fingerprint!r}, but the queries have {expected!r}. "
                f"Re-extract the features with the index's backbone, or use a run made with "
                f"backbone {expected!r}."
            )

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        """Check the dimension of feature vectors and project them into the index space."""
        x = np.asarray(queries, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"query vectors must have dimension {self.input_dim} (the index's features), "
                f"got shape {np.shape(queries)}; embed the queries with the backbone the index "
                f"was built with ({self.fingerprint!r})"
            )
        return self.projection.transform(x) if self.projection is not None else x

    def rows_of(self, image_ids: Sequence[str | None]) -> np.ndarray:
        """Stored row of each id; -1 for None or an id not in the index."""
        return self.ids.positions(image_ids)

    def search(
        self,
        queries: np.ndarray,
        top_n: int = 10,
        probes: int = 1,
        exclude_ids: Sequence[str | None] | None = None,
        allowed: np.ndarray | None = None,
    ) -> SearchResult:
        """Top-n most similar catalog images for each query feature vector (rows of `queries`).

        `exclude_ids` holds one id (or None) per query; that image (and, with products, its
        product) never appears in the query's answers (leave-one-out for catalog images used as
        queries). `allowed` is a boolean mask over the stored rows: only those are answers.
        """
        x = self.prepare_queries(queries)
        exclude_rows = None
        if exclude_ids is not None:
            if len(exclude_ids) != x.shape[0]:
                raise ValueError(
                    f"exclude_ids needs one entry (an id or None) per query: got "
                    f"{len(exclude_ids)} for {x.shape[0]} queries"
                )
            exclude_rows = self.rows_of(exclude_ids)
        return self.result_of(*self.search_rows(x, top_n, probes, exclude_rows, allowed=allowed))

    def result_of(self, rows: np.ndarray, scores: np.ndarray) -> SearchResult:
        """Turn stored rows (-1 = padding) and their scores into a SearchResult of ids."""
        ids = np.full(rows.shape, "", dtype=object)
        ids[rows >= 0] = np.asarray(self.ids.take(rows[rows >= 0]))
        return SearchResult(ids=ids, scores=scores)

    def search_rows(
        self,
        queries: np.ndarray,
        top_n: int,
        probes: int,
        exclude_rows: np.ndarray | None = None,
        block_rows: int = 4096,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search with queries already in the index space; return stored rows and scores.

        Rows are (q, min(top_n, n)) int64, -1 where padded: no request allocates more than the
        index holds. `exclude_rows` (q,) is one stored row per query to leave out (-1 for none;
        with products, its whole product). `allowed` (n,) bool keeps answers to those rows; the
        search then probes clusters holding allowed rows only, probes x (2 - share) / share of
        them for a filter keeping `share` of the rows, and more again until top_n answers are
        found or every cluster is searched.
        Queries are processed `block_rows` at a time.
        """
        top_n = min(top_n, max(self.n, 1))
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (self.n,):
                raise ValueError(f"allowed must be a mask of the {self.n} stored rows")
            # A selective filter's answers lie outside the query's neighbourhood more often, where
            # centroid order is a weaker guide: probe more than 1/share as many clusters.
            share = max(int(allowed.sum()), 1) / max(self.n, 1)
            probes = min(self.k, int(np.ceil(probes * (2 - share) / share)))
        q = queries.shape[0]
        rows = np.empty((q, top_n), dtype=np.int64)
        scores = np.empty((q, top_n), dtype=np.float32)
        for start in range(0, q, block_rows):
            stop = min(q, start + block_rows)
            block_ex = None if exclude_rows is None else exclude_rows[start:stop]
            block = np.ascontiguousarray(queries[start:stop], dtype=np.float32)
            if self.expansion:
                first_r, first_s = self._ranked(
                    block, max(top_n, self.expansion), probes, block_ex, allowed
                )
                block = self.expand(block, first_r, first_s)
            rows[start:stop], scores[start:stop] = self._ranked(
                block, top_n, probes, block_ex, allowed
            )
        return rows, scores

    def _ranked(
        self,
        queries: np.ndarray,
        top_n: int,
        probes: int,
        exclude_rows: np.ndarray | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One block's answers: plain, or distinct products / filtered, widened as needed."""
        if self.products is None and allowed is None:
            return self._search_block(queries, top_n, probes, exclude_rows)
        return self._search_widening(queries, top_n, probes, exclude_rows, allowed)

    def _search_widening(
        self,
        queries: np.ndarray,
        top_n: int,
        probes: int,
        exclude_rows: np.ndarray | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n distinct products (photos without products) among allowed rows: more photos
        are ranked while a query's candidates fill up with photos of products already found,
        and more clusters probed while it is short of answers and clusters remain."""
        q = queries.shape[0]
        best_r = np.full((q, top_n), -1, dtype=np.int64)
        best_s = np.full((q, top_n), -np.inf, dtype=np.float32)
        groups, per_product = (None, 1) if self.products is None else self._groups
        own = None
        if exclude_rows is not None:
            own = exclude_rows if groups is None else _group_of(exclude_rows, groups)
        todo = np.arange(q)
        wanted = min(self.n, top_n * per_product + (per_product if own is not None else 0))
        while True:
            ex = None if exclude_rows is None else exclude_rows[todo]
            rows, scores = self._search_block(queries[todo], wanted, probes, ex, allowed)
            found_r, found_s, count = distinct_top(
                rows, scores, groups, None if own is None else own[todo], top_n
            )
            best_r[todo], best_s[todo] = found_r, found_s
            short = count < top_n
            full = np.isfinite(scores[:, -1])
            more_rows = bool((short & full).any()) and wanted < self.n
            more_probes = bool((short & ~full).any()) and probes < self.k
            if not (more_rows or more_probes):
                return best_r, best_s
            wanted = min(self.n, wanted * 2) if more_rows else wanted
            probes = min(self.k, probes * 2) if more_probes else probes
            todo = todo[short]

    def with_products(self, products: Products) -> SearchIndex:
        """This index answering with distinct products when some product has several photos
        (and photo by photo otherwise, where both are the same)."""
        if not products.several_photos:
            return replace(self, products=None)
        return replace(self, products=products.ids_of(self.ids))

    def exact(self) -> SearchIndex:
        """The same vectors, ids, projection and expansion as one cluster: searching it (one
        probe) is exact search, the reference that recall is measured against."""
        return replace(
            self,
            centroids=np.zeros((1, self.dim), dtype=np.float32),
            offsets=np.array([0, self.n], dtype=np.int64),
            distances=np.zeros(self.n, dtype=np.float32),
            codes=None,
            codec=None,
        )

    def expand(self, queries: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Alpha query expansion: each query plus its first `expansion` results, each weighted
        by its similarity ** expansion_alpha (negative similarities count 0), re-normalised."""
        top_rows = rows[:, : self.expansion]
        weights = np.maximum(scores[:, : self.expansion], 0) ** self.expansion_alpha
        weights[top_rows < 0] = 0
        folded = np.einsum("qm,qmd->qd", weights, self.vectors[np.maximum(top_rows, 0)])
        return l2_normalise(queries + folded.astype(np.float32))

    def _probe(
        self, queries: np.ndarray, probes: int, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        """The `probes` clusters with the nearest centroids (Euclidean, unit queries) among
        those holding members (allowed members, with a mask)."""
        if allowed is None:
            filled = self.cluster_sizes > 0
        else:
            running = np.concatenate([[0], np.cumsum(allowed, dtype=np.int64)])
            filled = running[self.offsets[1:]] > running[self.offsets[:-1]]
        probes = min(probes, int(filled.sum()))
        if probes == int(filled.sum()):
            return np.broadcast_to(np.flatnonzero(filled), (queries.shape[0], probes))
        sim = queries @ self.centroids.T - self._half_sq_norms
        sim[:, ~filled] = -np.inf
        return np.argpartition(sim, sim.shape[1] - probes, axis=1)[:, -probes:]

    def _search_block(
        self,
        queries: np.ndarray,
        top_n: int,
        probes: int,
        exclude_rows: np.ndarray | None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ranked rows and scores of a block of queries: from the vectors, or compressed, a
        shortlist from the codes re-ranked exactly from the vectors."""
        if self.codes is None or self.codec is None:
            return self._scan(queries, queries, self.vectors, top_n, probes, exclude_rows, allowed)
        wide = shortlist_size(self.n, self.k, top_n, probes)
        scored = self.codec.queries(queries)
        rows, _ = self._scan(queries, scored, self.codes, wide, probes, exclude_rows, allowed)
        return self._rerank(queries, rows, top_n)

    def _rerank(
        self, queries: np.ndarray, rows: np.ndarray, top_n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best top_n of each query's shortlist `rows` (-1 padded), by exact similarity to
        the full vectors (read in bounded blocks)."""
        q, wide = rows.shape
        top_n = min(top_n, wide)
        best_r = np.empty((q, top_n), dtype=np.int64)
        best_s = np.empty((q, top_n), dtype=np.float32)
        step = max(1, _BLOCK_ELEMENTS // max(wide * self.dim, 1))
        for start in range(0, q, step):
            block = rows[start : start + step]
            members = self.vectors[np.maximum(block, 0).ravel()].reshape(*block.shape, self.dim)
            s = np.matmul(members, queries[start : start + step, :, None])[..., 0]
            s[block < 0] = -np.inf
            order = np.argsort(-s, axis=1, kind="stable")[:, :top_n]
            best_s[start : start + step] = np.take_along_axis(s, order, axis=1)
            best_r[start : start + step] = np.take_along_axis(block, order, axis=1)
        best_r[~np.isfinite(best_s)] = -1
        return best_r, best_s

    def _scan(
        self,
        queries: np.ndarray,
        scored: np.ndarray,
        members: np.ndarray,
        top_n: int,
        probes: int,
        exclude_rows: np.ndarray | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n of `scored` queries against the stored `members` (vectors or codes) of the
        clusters nearest to `queries`."""
        q = queries.shape[0]
        best_s = np.full((q, top_n), -np.inf, dtype=np.float32)
        best_r = np.full((q, top_n), -1, dtype=np.int64)
        if q == 0 or self.n == 0:
            return best_r, best_s
        probe = self._probe(queries, probes, allowed)
        if probe.shape[1] == 0:  # a filter no row passes
            return best_r, best_s
        if q == 1:
            return self._search_one(scored, members, probe[0], top_n, exclude_rows, allowed)
        flat = probe.ravel()
        order = np.argsort(flat, kind="stable")
        query_of = order // probe.shape[1]
        bounds = np.searchsorted(flat[order], np.arange(self.k + 1))
        for c in np.flatnonzero(np.diff(bounds)):
            self._scan_cluster(
                scored,
                members,
                query_of[bounds[c] : bounds[c + 1]],
                c,
                exclude_rows,
                allowed,
                best_s,
                best_r,
            )
        ranking = np.argsort(-best_s, axis=1, kind="stable")
        best_s = np.take_along_axis(best_s, ranking, axis=1)
        best_r = np.take_along_axis(best_r, ranking, axis=1)
        best_r[~np.isfinite(best_s)] = -1
        return best_r, best_s

    def _search_one(
        self,
        query: np.ndarray,
        members: np.ndarray,
        clusters: np.ndarray,
        top_n: int,
        exclude_rows: np.ndarray | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query (a served request): its probed clusters' scores gathered and partitioned
        once, instead of merged cluster by cluster (which costs more than the products when
        a filter probes many small clusters)."""
        ranges = [(int(self.offsets[c]), int(self.offsets[c + 1])) for c in sorted(clusters)]
        rows = np.concatenate([np.arange(lo, hi, dtype=np.int64) for lo, hi in ranges])
        scores = np.concatenate([query @ _dense(members[lo:hi]).T for lo, hi in ranges], axis=1)[0]
        if allowed is not None:
            scores[~allowed[rows]] = -np.inf
        if exclude_rows is not None and exclude_rows[0] >= 0:
            scores[rows == exclude_rows[0]] = -np.inf
        m = min(top_n, len(rows))
        top = np.argpartition(scores, len(scores) - m)[-m:]
        top = top[np.argsort(-scores[top], kind="stable")]
        best_s = np.full((1, top_n), -np.inf, dtype=np.float32)
        best_r = np.full((1, top_n), -1, dtype=np.int64)
        best_s[0, :m], best_r[0, :m] = scores[top], rows[top]
        best_r[~np.isfinite(best_s)] = -1
        return best_r, best_s

    def _scan_cluster(
        self,
        queries: np.ndarray,
        stored: np.ndarray,
        qi_all: np.ndarray,
        c: int,
        exclude_rows: np.ndarray | None,
        allowed: np.ndarray | None,
        best_s: np.ndarray,
        best_r: np.ndarray,
    ) -> None:
        """Score queries qi_all against the members of cluster c, block by bounded block."""
        lo, hi = int(self.offsets[c]), int(self.offsets[c + 1])
        n_cols = min(hi - lo, max(_MIN_COLUMNS, _BLOCK_ELEMENTS // len(qi_all)))
        n_rows = max(1, _BLOCK_ELEMENTS // n_cols)
        for col0 in range(lo, hi, n_cols):
            col1 = min(hi, col0 + n_cols)
            members = _dense(stored[col0:col1])
            barred = None if allowed is None else ~allowed[col0:col1]
            for r0 in range(0, len(qi_all), n_rows):
                qi = qi_all[r0 : r0 + n_rows]
                s = queries[qi] @ members.T
                if barred is not None:
                    s[:, barred] = -np.inf
                if exclude_rows is not None:
                    ex = exclude_rows[qi]
                    inside = np.flatnonzero((ex >= col0) & (ex < col1))
                    s[inside, ex[inside] - col0] = -np.inf
                _merge_top(best_s, best_r, qi, s, col0)


def _dense(block: np.ndarray) -> np.ndarray:
    """A block of stored vectors or codes as float32 (codes are widened for BLAS)."""
    return block if block.dtype == np.float32 else block.astype(np.float32)


def _group_of(rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Group of each row (-1 for a padded row -1)."""
    return np.where(rows >= 0, groups[np.maximum(rows, 0)], -1)


def distinct_top(
    rows: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None,
    own: np.ndarray | None,
    top_n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `top_n` answers of ranked (rows, scores) that are the best of their group
    (product; None: each row its own), leaving out each query's `own` group; (rows, scores,
    answers found per query)."""
    valid = rows >= 0
    group = rows.copy() if groups is None else _group_of(rows, groups)
    if own is not None:
        valid &= group != own[:, None]
    group[~valid] = -1
    order = np.argsort(group, axis=1, kind="stable")  # stable: best photo first in each group
    ordered = np.take_along_axis(group, order, axis=1)
    first = np.ones(ordered.shape, dtype=bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = np.empty_like(first)
    np.put_along_axis(keep, order, first & (ordered >= 0), axis=1)
    pick = np.argsort(~keep, axis=1, kind="stable")[:, :top_n]
    kept = np.take_along_axis(keep, pick, axis=1)
    out_r = np.where(kept, np.take_along_axis(rows, pick, axis=1), -1)
    out_s = np.where(kept, np.take_along_axis(scores, pick, axis=1), -np.inf).astype(np.float32)
    if out_r.shape[1] < top_n:
        pad = top_n - out_r.shape[1]
        out_r = np.pad(out_r, ((0, 0), (0, pad)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_r, out_s, keep.sum(axis=1)


def build_index(
    ids: Sequence[str] | np.ndarray | Ids,
    vectors: np.ndarray,
    centroids: np.ndarray,
    labels: np.ndarray,
    fingerprint: str,
    projection: Projection | None = None,
    expansion: int = 0,
    expansion_alpha: float = 3.0,
    prints: np.ndarray | None = None,
    out: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> SearchIndex:
    """Group `vectors` (feature space, possibly memory-mapped) and the optional raw `prints`
    (duplicate_prints, one row per image) by `labels`; centroids live in the projected space;
    `expansion` and `expansion_alpha` set the index's query expansion (0: none). The grouped,
    projected vectors are made `chunk_rows` at a time, in memory or, with `out`, into that
    .npy file (then memory-mapped), and the prepared prints into a folder beside it (`out`'s
    name + `_prints`), so a catalog larger than memory can be indexed."""
    ids_arr = Ids.of(ids)
    x = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    if x.ndim != 2 or len(ids_arr) != x.shape[0] or labels.shape != (x.shape[0],):
        raise ValueError(
            f"ids ({len(ids_arr)}), vectors {x.shape} and labels {labels.shape} must describe "
            f"the same images"
        )
    if pc.count_distinct(ids_arr.values).as_py() != len(ids_arr):
        duplicated = pd.Index(np.asarray(ids_arr)).duplicated()
        first = ids_arr[int(np.argmax(duplicated))]
        raise DataError(f"image ids must be unique; {first!r} appears more than once")
    dim = x.shape[1] if projection is None else projection.output_dim
    centroids = np.asarray(centroids, dtype=np.float32)
    k = centroids.shape[0]
    if centroids.ndim != 2 or centroids.shape[1] != dim:
        raise ValueError(
            f"centroids {centroids.shape} must have the dimension of the "
            f"{'projected ' if projection is not None else ''}vectors ({dim})"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}; got {labels.min()}..{labels.max()}")
    order = np.argsort(labels, kind="stable")
    offsets = np.zeros(k + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(labels, minlength=k))
    grouped = _grouped_rows(x, order, projection, out, chunk_rows)
    if prints is not None and len(prints) != len(ids_arr):
        raise ValueError(f"got {len(prints)} prints for {len(ids_arr)} images")
    prints_out = None if out is None else out.with_name(f"{out.stem}_prints")
    return SearchIndex(
        centroids=centroids,
        vectors=grouped,
        ids=ids_arr.take(order),
        offsets=offsets,
        distances=_centroid_distances(grouped, centroids, offsets),
        fingerprint=fingerprint,
        projection=projection,
        expansion=expansion,
        expansion_alpha=expansion_alpha,
        prints=None if prints is None else prepare(prints, order, out=prints_out),
    )


def _grouped_rows(
    x: np.ndarray,
    order: np.ndarray,
    projection: Projection | None,
    out: Path | None,
    chunk_rows: int,
) -> np.ndarray:
    """The rows of `x` in `order`, projected, `chunk_rows` at a time (each chunk read in
    ascending row order, which a memory-mapped `x` reads fastest)."""
    dim = x.shape[1] if projection is None else projection.output_dim
    grouped = new_matrix((len(order), dim), np.float32, out)
    for start in range(0, len(order), chunk_rows):
        rows = order[start : start + chunk_rows]
        ascending = np.sort(rows)
        block = np.asarray(x[ascending], dtype=np.float32)
        if projection is not None:
            block = projection.transform(block)
        grouped[start : start + len(rows)] = block[np.searchsorted(ascending, rows)]
    return finish_matrix(grouped, out)


def _centroid_distances(
    grouped: np.ndarray, centroids: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Euclidean distance of each stored row to its own cluster's centroid."""
    distances = np.empty(grouped.shape[0], dtype=np.float32)
    for c in range(centroids.shape[0]):
        lo, hi = offsets[c], offsets[c + 1]
        block = grouped[lo:hi]
        sq = (
            np.einsum("ij,ij->i", block, block)
            - 2 * block @ centroids[c]
            + centroids[c] @ centroids[c]
        )
        distances[lo:hi] = np.sqrt(np.maximum(sq, 0))
    return distances


def augment_database(
    index: SearchIndex,
    neighbours: int,
    alpha: float = 3.0,
    probes: int = AUGMENT_PROBES,
    block_rows: int = 4096,
    out: Path | None = None,
) -> SearchIndex:
    """Database-side augmentation: each stored vector replaced by the normalised sum of itself
    and its `neighbours` nearest other stored vectors weighted by similarity ** alpha (found in
    the `probes` nearest clusters, without query expansion); clusters are kept. The new vectors
    are made in memory or, with `out`, into that .npy file (then memory-mapped)."""
    plain = replace(index, expansion=0, products=None)
    probes = min(probes, index.k)
    augmented = new_matrix(index.vectors.shape, np.float32, out)
    for start in range(0, index.n, block_rows):
        rows = np.arange(start, min(index.n, start + block_rows))
        found, scores = plain.search_rows(index.vectors[rows], neighbours, probes, rows)
        weights = np.maximum(scores, 0) ** alpha
        weights[found < 0] = 0
        folded = np.einsum("qm,qmd->qd", weights, index.vectors[np.maximum(found, 0)])
        augmented[rows] = l2_normalise(index.vectors[rows] + folded.astype(np.float32))
    augmented = finish_matrix(augmented, out)
    return replace(
        index,
        vectors=augmented,
        distances=_centroid_distances(augmented, index.centroids, index.offsets),
    )


def brute_force(
    queries: np.ndarray,
    ids: Sequence[str] | np.ndarray | Ids,
    vectors: np.ndarray,
    top_n: int,
    exclude_ids: Sequence[str | None] | None = None,
    expansion: int = 0,
    expansion_alpha: float = 3.0,
) -> SearchResult:
    """Exact top-n by cosine over all `vectors`, in bounded memory (the catalog in blocks), with
    optional alpha query expansion (see SearchIndex.expand)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    whole = SearchIndex(
        centroids=np.zeros((1, x.shape[1]), dtype=np.float32),
        vectors=x,
        ids=Ids.of(ids),
        offsets=np.array([0, x.shape[0]], dtype=np.int64),
        distances=np.zeros(x.shape[0], dtype=np.float32),
        fingerprint="",
        expansion=expansion,
        expansion_alpha=expansion_alpha,
    )
    return whole.search(queries, top_n=top_n, probes=1, exclude_ids=exclude_ids)


def compress(
    index: SearchIndex,
    max_bytes_per_photo: int | Literal["auto"],
    codec: Codec | None = None,
    seed: int = 0,
) -> SearchIndex:
    """The index holding its vectors as `max_bytes_per_photo` chooses (see choose_storage):
    full float32, or int8 codes made by `codec` (a parent run's, kept when it has the chosen
    dimensions) or by a codec fitted on the index's vectors."""
    storage = choose_storage(index.n, index.dim, max_bytes_per_photo)
    if not storage.compressed:
        return replace(index, codes=None, codec=None, storage=storage)
    if codec is None or codec.dims != storage.dims or codec.mean.shape[0] != index.dim:
        codec = fit_codec(index.vectors, storage.dims, seed)
    return replace(index, codes=codec.encode(index.vectors), codec=codec, storage=storage)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def save(index: SearchIndex, folder: str | Path) -> Path:
    """Write the index into `folder` (created if needed); index.json is written last."""
    folder = Path(folder)
    files = IndexLayout(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_npy(files.centroids, index.centroids.astype(np.float32))
    _save_npy(files.vectors, index.vectors.astype(np.float32))
    _save_npy(files.offsets, index.offsets.astype(np.int64))
    columns = {
        "image_id": index.ids.values,
        "cluster": pa.array(index.labels, type=pa.int32()),
        "distance": pa.array(index.distances.astype(np.float32), type=pa.float32()),
    }
    if index.products is not None:
        columns["product_id"] = index.products.values
    table = pa.table(columns)
    with atomic_path(files.assignments) as tmp:
        pq.write_table(table, tmp)
    if index.projection is not None:
        index.projection.save(files.projection)
    else:
        files.projection.unlink(missing_ok=True)
    if index.codes is not None and index.codec is not None:
        _save_npy(files.codes, index.codes)
        index.codec.save(files.codec)
    else:
        files.codes.unlink(missing_ok=True)
        files.codec.unlink(missing_ok=True)
    for path, array in zip(_print_files(files), _print_arrays(index.prints), strict=True):
        if array is None:
            path.unlink(missing_ok=True)
        else:
            _save_npy(path, array)
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": index.fingerprint,
        "k": index.k,
        "dim": index.dim,
        "input_dim": index.input_dim,
        "n": index.n,
        "has_projection": index.projection is not None,
        "expansion": index.expansion,
        "expansion_alpha": index.expansion_alpha,
        "has_prints": index.prints is not None,
        "storage": None if index.storage is None else asdict(index.storage),
    }
    write_text_atomic(files.meta, json.dumps(meta, indent=2) + "\n")
    return folder


def _print_files(files: IndexLayout) -> tuple[Path, ...]:
    return files.print_windows, files.print_scales, files.print_thumbs, files.print_colours


def _print_arrays(prints: Prints | None) -> tuple[np.ndarray | None, ...]:
    if prints is None:
        return None, None, None, None
    return prints.windows, prints.scales, prints.thumbs, prints.colours


def _corrupt(folder: Path, what: str) -> ValueError:
    return ValueError(f"the index in {folder} is inconsistent ({what}); retrain to rebuild it")


def load_index(
    folder: str | Path, expected_fingerprint: str | None = None, mmap: bool = True
) -> SearchIndex:
    """Load an index written by `save`; nothing is unpickled. Vectors and duplicate prints are
    memory-mapped read-only; with `mmap=False` the vectors (the codes, for a compressed index,
    whose full vectors stay memory-mapped) are read into memory and the prints left out (only
    bulk jobs score duplicates).

    With `expected_fingerprint`, an index built from another backbone is refused.
    """
    folder = Path(folder)
    files = IndexLayout(folder)
    if not files.meta.is_file():
        raise FileNotFoundError(
            f"no search index in {folder} ({files.meta.name} is missing); train a run first"
        )
    meta = json.loads(files.meta.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise RunIntegrityError(
            f"the index in {folder} has format version {meta.get('format_version')!r}, this "
            f"vasrch reads version {FORMAT_VERSION}; retrain to rebuild it"
        )
    projection = Projection.load(files.projection) if meta["has_projection"] else None
    storage = VectorStorage(**meta["storage"]) if meta.get("storage") else None
    compressed = storage is not None and storage.compressed
    vectors_mode = "r" if mmap or compressed else None  # compressed: the codes are in memory
    index = SearchIndex(
        centroids=np.load(files.centroids, allow_pickle=False),
        vectors=np.asarray(np.load(files.vectors, mmap_mode=vectors_mode, allow_pickle=False)),
        ids=Ids.of([]),
        offsets=np.load(files.offsets, allow_pickle=False),
        distances=np.empty(0, dtype=np.float32),
        fingerprint=meta["fingerprint"],
        projection=projection,
        expansion=int(meta.get("expansion", 0)),
        expansion_alpha=float(meta.get("expansion_alpha", 3.0)),
        storage=storage,
    )
    if compressed:
        index.codes = np.load(files.codes, mmap_mode="r" if mmap else None, allow_pickle=False)
        index.codec = Codec.load(files.codec)
    if expected_fingerprint is not None:
        index.check_fingerprint(expected_fingerprint)
    table = pq.read_table(files.assignments)
    index.ids = Ids(table.column("image_id"))
    index.distances = table.column("distance").to_numpy().astype(np.float32)
    if "product_id" in table.column_names:
        index.products = Ids(table.column("product_id"))
    n, k, dim = meta["n"], meta["k"], meta["dim"]
    if index.vectors.shape != (n, dim) or index.centroids.shape != (k, dim):
        raise _corrupt(folder, f"vectors {index.vectors.shape}, centroids {index.centroids.shape}")
    if index.offsets.shape != (k + 1,) or index.offsets[-1] != n or len(index.ids) != n:
        raise _corrupt(folder, f"offsets {index.offsets.shape}, {len(index.ids)} ids for n={n}")
    if index.codes is not None and index.codes.shape != (n, storage.dims):
        raise _corrupt(folder, f"codes {index.codes.shape} for n={n}")
    if index.input_dim != meta["input_dim"]:
        raise _corrupt(folder, f"projection input dimension {index.input_dim}")
    if mmap and meta.get("has_prints"):
        arrays = [np.load(path, mmap_mode="r", allow_pickle=False) for path in _print_files(files)]
        if any(len(array) != n for array in arrays):
            raise _corrupt(folder, f"{[len(a) for a in arrays]} prints for n={n}")
        index.prints = Prints(*arrays)
    return index
