"""Where everything lives: every folder and file name inside a workspace, a run and a job.

Each layout is a small frozen dataclass around a root folder; its properties are paths. No
other module spells these names, so the on-disk format is read here in one place (DESIGN.md
shows the same tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGING_PREFIX = ".staging-"


def staging_path(final: Path) -> Path:
    """The temporary sibling a folder is written under before it is renamed to `final`."""
    return final.with_name(f"{STAGING_PREFIX}{final.name}")


@dataclass(frozen=True)
class FeatureCacheLayout:
    """features/<backbone-fingerprint>/: shards and rejections keyed by content hash."""

    root: Path
    SHARD_PREFIX = "part-"
    REJECTED_PREFIX = "rejected-"

    def shard(self, stem: str) -> Path:
        return self.root / f"{self.SHARD_PREFIX}{stem}.parquet"

    def rejected(self, stem: str) -> Path:
        return self.root / f"{self.REJECTED_PREFIX}{stem}.parquet"

    def shards(self) -> list[Path]:
        """Every complete feature shard, sorted by name."""
        return sorted(self.root.glob(f"{self.SHARD_PREFIX}*.parquet"))

    def rejections(self) -> list[Path]:
        """Every rejection file, sorted by name."""
        return sorted(self.root.glob(f"{self.REJECTED_PREFIX}*.parquet"))


@dataclass(frozen=True)
class IndexLayout:
    """index/: the search index, in .npy, Parquet and JSON only."""

    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "index.json"

    @property
    def centroids(self) -> Path:
        return self.root / "centroids.npy"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors.npy"

    @property
    def offsets(self) -> Path:
        return self.root / "offsets.npy"

    @property
    def assignments(self) -> Path:
        return self.root / "assignments.parquet"

    @property
    def projection(self) -> Path:
        return self.root / "projection.npz"


@dataclass(frozen=True)
class DiagnosticsLayout:
    """diagnostics/: the k sweep, its suggestion and its plot."""

    root: Path

    @property
    def sweep(self) -> Path:
        return self.root / "sweep.parquet"

    @property
    def suggested_k(self) -> Path:
        return self.root / "suggested_k.json"

    @property
    def plot(self) -> Path:
        return self.root / "elbow_silhouette.png"


@dataclass(frozen=True)
class BulkLayout:
    """A bulk output folder: neighbour shards, duplicate groups, optional CSV, completion mark."""

    root: Path

    def neighbours(self, chunk: int) -> Path:
        return self.root / f"neighbours-{chunk:05d}.parquet"

    def neighbour_shards(self) -> list[Path]:
        """The neighbour shards written so far, in chunk order."""
        return sorted(self.root.glob("neighbours-*.parquet"))

    @property
    def duplicates(self) -> Path:
        return self.root / "duplicates.parquet"

    @property
    def csv(self) -> Path:
        return self.root / "neighbours.csv"

    @property
    def complete(self) -> Path:
        return self.root / "COMPLETE"


@dataclass(frozen=True)
class RunLayout:
    """runs/<run-id>/: one versioned run, never changed once complete."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.parquet"

    @property
    def model(self) -> Path:
        return self.root / "model.joblib"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def index(self) -> IndexLayout:
        return IndexLayout(self.root / "index")

    @property
    def diagnostics(self) -> DiagnosticsLayout:
        return DiagnosticsLayout(self.root / "diagnostics")

    @property
    def bulk(self) -> BulkLayout:
        return BulkLayout(self.root / "bulk")


@dataclass(frozen=True)
class QueryJobLayout:
    """queries/<job>/: the answers of one query flow run."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results.parquet"

    @property
    def page(self) -> Path:
        return self.root / "results.html"


@dataclass(frozen=True)
class WorkspaceLayout:
    """<workspace>/: the feature cache, the runs, later bulk jobs and query jobs."""

    root: Path

    def features(self, fingerprint: str) -> FeatureCacheLayout:
        return FeatureCacheLayout(self.root / "features" / fingerprint)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def latest(self) -> Path:
        """runs/LATEST: the name of the run that queries use by default."""
        return self.runs / "LATEST"

    def run(self, run_id: str) -> RunLayout:
        return RunLayout(self.runs / run_id)

    def bulk_job(self, run_id: str, job: str) -> BulkLayout:
        """bulk/<run-id>/<job>/: a bulk job on a saved run (the run folder never changes)."""
        return BulkLayout(self.root / "bulk" / run_id / job)

    def query_job(self, job: str) -> QueryJobLayout:
        return QueryJobLayout(self.root / "queries" / job)


@dataclass(frozen=True)
class SavedFeaturesLayout:
    """The folder the original API's extract_features saves to (`save_to`)."""

    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "vasrch-features.json"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.parquet"

    @property
    def plot(self) -> Path:
        return self.root / "elbow_silhouette.png"

    def cache(self, fingerprint: str) -> FeatureCacheLayout:
        return FeatureCacheLayout(self.root / fingerprint)


def saved_index_dir(model_filename: Path) -> Path:
    """<model_filename>.index/: the search index train_clusters saves beside the model."""
    return model_filename.with_name(model_filename.name + ".index")
