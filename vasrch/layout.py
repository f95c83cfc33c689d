"""Where everything lives: every folder and file name inside a workspace, a run and a job.

Each layout is a small frozen dataclass around a root folder; its attributes are paths. No
other module spells these names, so the on-disk format is defined here in one place (DESIGN.md
shows the same tree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

STAGING_PREFIX = ".staging-"

T = TypeVar("T")


def staging_path(final: Path) -> Path:
    """The temporary sibling a folder is written under before it is renamed to `final`."""
    return final.with_name(f"{STAGING_PREFIX}{final.name}")


class Entry(Generic[T]):
    """A named file or folder inside a layout's root; read on a layout, it is that path (or
    the sub-layout `wrap` makes of it). Its docstring says what the entry holds."""

    def __init__(self, name: str, doc: str, wrap: Callable[[Path], T] = Path) -> None:
        self.name = name
        self.wrap = wrap
        self.__doc__ = f"{name}: {doc}"

    def __get__(self, layout: Any, owner: type | None = None) -> T:
        if layout is None:
            return self  # type: ignore[return-value]
        return self.wrap(layout.root / self.name)


@dataclass(frozen=True)
class FeatureCacheLayout:
    """features/<backbone-fingerprint>/: shards and rejections keyed by content hash."""

    root: Path
    SHARD_PREFIX = "part-"
    REJECTED_PREFIX = "rejected-"

    def shard(self, stem: str) -> Path:
        """The feature shard with this stem (a hash of its members' sha256s)."""
        return self.root / f"{self.SHARD_PREFIX}{stem}.parquet"

    def rejected(self, stem: str) -> Path:
        """The rejections of the chunk with this stem: sha256, image_id, reason."""
        return self.root / f"{self.REJECTED_PREFIX}{stem}.parquet"

    def shards(self) -> list[Path]:
        """Every complete feature shard, sorted by name."""
        return sorted(self.root.glob(f"{self.SHARD_PREFIX}*.parquet"))

    def rejections(self) -> list[Path]:
        """Every rejection file, sorted by name."""
        return sorted(self.root.glob(f"{self.REJECTED_PREFIX}*.parquet"))


@dataclass(frozen=True)
class IndexLayout:
    """index/: the search index, in .npy, Parquet and JSON only (nothing unpickled)."""

    root: Path
    meta = Entry("index.json", "format version, fingerprint, k, dimensions, n; written last")
    centroids = Entry("centroids.npy", "(k, dim) float32 KMeans centroids")
    vectors = Entry("vectors.npy", "(n, dim) float32 vectors grouped by cluster")
    offsets = Entry("offsets.npy", "(k + 1,) int64 start of each cluster's rows")
    assignments = Entry("assignments.parquet", "image_id, cluster, distance to its centroid")
    projection = Entry("projection.npz", "the PCA applied before clustering, when configured")
    codes = Entry("codes.npy", "(n, dims) int8 compressed vectors, when the budget asks for them")
    codec = Entry("codec.npz", "the PCA and quantization bounds that made codes.npy")
    print_windows = Entry("print_windows.npy", "(n, windows, pixels) int8 print windows")
    print_scales = Entry("print_scales.npy", "(n, windows) float32 scales of the print windows")
    print_thumbs = Entry("print_thumbs.npy", "(n, 32, 32) uint8 blurred grey print thumbnails")
    print_colours = Entry("print_colours.npy", "(n, windows, 72) uint8 print chromaticities")


@dataclass(frozen=True)
class DiagnosticsLayout:
    """diagnostics/: the k sweep, its suggestion and its plot."""

    root: Path
    sweep = Entry("sweep.parquet", "k, inertia, silhouette of each swept k")
    suggested_k = Entry("suggested_k.json", "the suggested k and the rule that chose it")
    plot = Entry("elbow_silhouette.png", "elbow and silhouette plot of the sweep")


@dataclass(frozen=True)
class BulkLayout:
    """A bulk output folder: neighbour shards, duplicate groups, optional CSV, completion mark."""

    root: Path
    duplicates = Entry("duplicates.parquet", "near-duplicate groups: group_id, image_id, ...")
    products = Entry(
        "product_neighbours.parquet",
        "each product's neighbour products over all its photos (when a product has several)",
    )
    csv = Entry("neighbours.csv", "every neighbour shard as one CSV, when asked for")
    complete = Entry("COMPLETE", "written last by a bulk job on a saved run")

    def neighbours(self, chunk: int) -> Path:
        """The neighbour shard of one chunk of clusters: each photo's neighbour products
        (vasrch.bulk.neighbours.NEIGHBOUR_COLUMNS)."""
        return self.root / f"neighbours-{chunk:05d}.parquet"

    def neighbour_shards(self) -> list[Path]:
        """The neighbour shards written so far, in chunk order."""
        return sorted(self.root.glob("neighbours-*.parquet"))


@dataclass(frozen=True)
class RunLayout:
    """runs/<run-id>/: one versioned run, never changed once complete."""

    root: Path
    manifest = Entry("manifest.json", "versions, counts, timings, metrics, artifact sha256s")
    config = Entry("config.yaml", "the resolved config the run was trained with")
    catalog = Entry("catalog.parquet", "image_id, path, sha256, bytes, status of each image")
    model = Entry("model.joblib", "the fitted scikit-learn KMeans")
    report = Entry("report.html", "the run's report page")
    rejections = Entry(
        "rejections.parquet",
        "image_id, row (manifest row), reason, retry of every photo the run could not use",
    )
    index = Entry("index", "the search index", IndexLayout)
    diagnostics = Entry("diagnostics", "the k sweep", DiagnosticsLayout)
    bulk = Entry("bulk", "the train flow's bulk step", BulkLayout)

    @property
    def run_id(self) -> str:
        """The run's id: its folder's name."""
        return self.root.name


@dataclass(frozen=True)
class QueryJobLayout:
    """queries/<job>/: the answers of one query flow run."""

    root: Path
    results = Entry("results.parquet", "query, rank, image_id, path, score")
    page = Entry("results.html", "each query and its ranked neighbours, with thumbnails")


@dataclass(frozen=True)
class WorkspaceLayout:
    """<workspace>/: the feature cache, the runs, later bulk jobs and query jobs."""

    root: Path
    runs = Entry("runs", "the versioned runs and LATEST")
    queries = Entry("queries", "one folder per query flow run")
    query_service = Entry(
        "query-service.json", "where the running query service listens, for query flows"
    )
    hidden_products = Entry(
        "hidden-products.json", "products hidden from every answer until the catalog drops them"
    )

    @property
    def latest(self) -> Path:
        """runs/LATEST: the name of the run that queries use by default."""
        return self.runs / "LATEST"

    def features(self, fingerprint: str) -> FeatureCacheLayout:
        """The feature cache of one backbone (its fingerprint)."""
        return FeatureCacheLayout(self.root / "features" / fingerprint)

    def listing(self, source: str) -> Path:
        """features/listings/<hash of the catalog>.parquet: what each remote photo of that
        catalog held at its last scan (path, etag, bytes, modified, sha256)."""
        name = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return self.root / "features" / "listings" / f"{name}.parquet"

    def run(self, run_id: str) -> RunLayout:
        """The folder of one run."""
        return RunLayout(self.runs / run_id)

    def bulk_jobs(self, run_id: str) -> Path:
        """bulk/<run-id>/: the later bulk jobs on one saved run."""
        return self.root / "bulk" / run_id

    def bulk_job(self, run_id: str, job: str) -> BulkLayout:
        """bulk/<run-id>/<job>/: a bulk job on a saved run (the run folder never changes)."""
        return BulkLayout(self.bulk_jobs(run_id) / job)

    def query_job(self, job: str) -> QueryJobLayout:
        """queries/<job>/: one query flow run's answers."""
        return QueryJobLayout(self.queries / job)


@dataclass(frozen=True)
class SavedFeaturesLayout:
    """The folder the original API's extract_features saves to (`save_to`)."""

    root: Path
    meta = Entry("vasrch-features.json", "catalog root, backbone and its fingerprint")
    catalog = Entry("catalog.parquet", "the scanned catalog")
    plot = Entry("elbow_silhouette.png", "get_optimal_num_clusters' plot")

    def cache(self, fingerprint: str) -> FeatureCacheLayout:
        """The feature cache of one backbone inside the folder."""
        return FeatureCacheLayout(self.root / fingerprint)


@dataclass(frozen=True)
class SavedIndexLayout:
    """<model_filename>.index/: the search index train_clusters saves beside the model (the
    files of IndexLayout), what it was built from, and the sha256 of each file."""

    root: Path
    meta = Entry("vasrch-features.json", "catalog root, backbone and its fingerprint")
    hashes = Entry("hashes.json", "sha256 of every other file of the folder; written last")

    @property
    def index(self) -> IndexLayout:
        """The index files, which sit in the folder itself."""
        return IndexLayout(self.root)


def saved_index(model_filename: Path) -> SavedIndexLayout:
    """<model_filename>.index/: the search index train_clusters saves beside the model."""
    return SavedIndexLayout(model_filename.with_name(model_filename.name + ".index"))
