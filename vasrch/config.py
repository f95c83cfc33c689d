"""The YAML configuration: schema, defaults, loading and validation with clear errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vasrch.addresses import WORKSPACE_STORE_SCHEMES, is_url, url_scheme
from vasrch.errors import ConfigError

IntOrAuto = Annotated[int, Field(ge=1)] | Literal["auto"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_other_types(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads yes/no/on/off as booleans; only a boolean field may take one (pydantic
        would otherwise turn `probes: yes` into 1)."""
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError(f"a yes/no value ({value}) is only accepted by on/off fields")
        return value


class CatalogConfig(_Section):
    """`catalog`: the folder of product images, the offline demo, and the labels for precision@k."""

    path: Path | str = Field(
        description="Folder of product images, scanned recursively, or an object store prefix "
        "(s3://bucket/photos, gs://..., az://...; see Catalogs in object storage).",
        examples=["./catalog", "s3://shop-photos/catalog"],
    )
    demo: bool = Field(
        False, description="Draw the offline demo catalog into `path` when it is missing."
    )
    labels_csv: Path | None = Field(
        None,
        description="CSV of image_id,label for precision@k; null: each photo's parent folder "
        '(shoes/sneakers/a.jpg is a "sneakers").',
    )
    follow_external_symlinks: bool = Field(
        False,
        description="Follow symlinks that resolve outside `path`; by default an image symlink "
        "leading out is rejected and a folder one skipped with a warning, neither opened.",
    )
    manifest: Path | None = Field(
        None,
        description="CSV or Parquet of products (see Products): columns product_id and image (a "
        "path relative to `path`), any others kept as product metadata (category, title, url, "
        "...); a product may have many rows. Null: every image is a product and its class "
        "folder its `category`.",
    )
    allow_absolute_paths: bool = Field(
        False, description="Accept absolute image paths in the manifest (outside `path`)."
    )
    storage_options: dict[str, Any] = Field(
        {},
        description="Options for the object store's fsspec filesystem (endpoint_url, key, "
        "secret, anon, client_kwargs, ...); credentials otherwise come from the store's "
        "standard sources (AWS_* variables, profiles, roles).",
    )
    cache_dir: Path | None = Field(
        None,
        description="Keep downloaded photos here, by sha256; null: nothing is written to disk "
        "(extraction downloads a new or changed photo again after the scan hashed it).",
    )
    download_workers: int = Field(
        16, ge=1, le=256, description="Remote photos downloaded at once (scan and extraction)."
    )
    download_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a download waits for the server (connecting, each read); a whole "
        "photo may take ten times that.",
    )
    download_retries: int = Field(
        3, ge=0, le=20, description="Retries of a 429, 5xx, timeout or cut-off download."
    )
    host_rate_limit: float | None = Field(
        None, gt=0, description="Most requests a second to one web host; null: no limit."
    )

    @field_validator("path", mode="before")
    @classmethod
    def _url_or_folder(cls, value: Any) -> Any:
        """A URL stays text (a Path would fold its //); anything else is a folder."""
        return Path(value) if isinstance(value, str) and not is_url(value) else value


class FeaturesConfig(_Section):
    """`features`: the backbone, its weights, layer, pooling and input size, and how images are
    batched, sharded, decoded and embedded."""

    backbone: str = Field(
        "efficientnet_lite0",
        description="efficientnet_lite0, efficientnet_lite1 (about 1.4x the extraction time of "
        "lite0), efficientnet_lite2 (about 1.9x), all offline, or a keras.applications name: "
        "VGG16, ResNet50, MobileNetV2, ...",
    )
    weights: str = Field(
        "imagenet",
        description="imagenet, none (random, seeded; for tests) or the path of a weights file.",
    )
    layer: str | None = Field(
        None,
        description="Cut a keras.applications network at this layer (VGG16: block5_pool, as "
        "the original); null: its last feature map. Not for the efficientnet_lite backbones.",
    )
    pooling: Literal["avg", "max", "gem", "rmac", "rgem", "flatten"] = Field(
        "rgem",
        description="How the feature map becomes one vector: avg, max, gem, rmac (regional max, "
        "Tolias et al.), rgem (regional GeM) or flatten (flatten + VGG16 block5_pool = 25,088-d).",
    )
    gem_p: float = Field(3.0, gt=0, description="Exponent of GeM pooling (gem and rgem).")
    image_size: int | None = Field(
        None,
        ge=32,
        le=1024,
        description="Square input size in pixels; null: the network's own (efficientnet_lite0 "
        "224, lite1 240, lite2 260; others 224).",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Images per call of the network.")
    shard_size: int = Field(
        1024, ge=1, description="Images per Parquet shard, and per extraction task."
    )
    decode_workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="Threads decoding images while the model runs; auto: half the cores, at "
        "least one (the model's threads use the rest).",
    )
    mixed_precision: bool = Field(False, description="float16 compute (useful on a GPU).")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where the network runs: auto (a GPU when TensorFlow sees one), cpu "
        "or gpu (an error without one).",
    )
    max_pixels: int = Field(
        89_478_485, ge=1, description="Decompression-bomb limit: larger images are rejected."
    )
    max_file_bytes: int = Field(
        50_000_000,
        ge=1,
        description="Catalog files larger than this are rejected before any byte is read.",
    )


class DiagnosticsConfig(_Section):
    """`clustering.diagnostics`: the k sweep (range, sample, PCA) and the rule that suggests k."""

    k_min: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description="Smallest k swept; auto: sqrt(n), the low end of IVF practice "
        "(k ~ 1-4 sqrt(n)).",
    )
    k_max: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description="Largest k swept; auto: 4 sqrt(n) of the sweep's sample; both capped by "
        "max_clusters. A suggested "
        "k at the top of the sweep is flagged in the logs, report and CLI.",
    )
    k_step: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Step between swept k; auto: about 16 values over the range, the top one "
        "included.",
    )
    max_clusters: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description="Upper bound of the sweep and of k; auto: 100 while the sweep sees the "
        "whole catalog (n <= sample), above that 4 sqrt(n), lowered when KMeans "
        "trains on a sample (max_train_rows) to 30 of its rows a centroid (FAISS's guideline). "
        "With auto bounds a sweep "
        "on a sample of the catalog is scaled to it: k = the sample's k x sqrt(n / sample). "
        "Catalogs of fewer than 6 images skip the sweep: auto k is then 1 (exact search).",
    )
    silhouette_sample: int = Field(
        10_000, ge=100, description="Silhouette on a seeded sample of this size."
    )
    sample: int = Field(
        20_000, ge=10, description="Vectors the sweep is fitted on (a seeded sample)."
    )
    n_components: int | None = Field(
        64,
        ge=2,
        description="PCA dimensions for the sweep only (it fits KMeans many times); "
        "null: the clustering space.",
    )
    rule: Literal["silhouette", "knee", "both"] = Field(
        "both",
        description="How k is suggested: silhouette, knee, or both (the silhouette maximum at "
        "or beyond the knee).",
    )


class ClusteringConfig(_Section):
    """`clustering`: k (or auto), the PCA before clustering and search, and how KMeans is fitted."""

    num_clusters: IntOrAuto = Field(
        "auto", description="k, or auto: the suggested k of the diagnostics."
    )
    n_components: int | None = Field(
        None,
        ge=2,
        description="PCA dimensions before clustering and search (kept with the index); null "
        "keeps all.",
    )
    minibatch_above: int = Field(
        20_000,
        ge=1,
        description="The k sweep fits MiniBatchKMeans above this many vectors (the index's "
        "spherical k-means does not).",
    )
    max_train_rows: int | None = Field(
        200_000,
        ge=2,
        description="Fit KMeans on a seeded sample of this many, then assign all; null: fit "
        "on all.",
    )
    seed: int = Field(0, description="Seed of the PCA, the k sweep and KMeans.")
    diagnostics: DiagnosticsConfig = Field(
        DiagnosticsConfig(), description="The k sweep and the rule that suggests k."
    )


class SearchConfig(_Section):
    """`search`: neighbours per query (top_n) and probes, fixed or calibrated per run."""

    top_n: int = Field(10, ge=1, description="Answers per query.")
    probes: IntOrAuto = Field(
        "auto",
        description="Nearest clusters whose members are ranked; auto: calibrated per run, the "
        "fewest probes reaching target_recall on the evaluation sample.",
    )
    target_recall: float = Field(
        0.95, gt=0, le=1, description="recall@10 against exact search that auto aims for."
    )
    max_probes: int = Field(
        32,
        ge=1,
        description="Most probes auto may choose (bounds query time); a run that needs "
        "more keeps this many and reports its lower recall (so the nightly recall gate can "
        "reject it).",
    )
    centre: bool = Field(
        True, description="Centre vectors on the catalog mean and re-normalise (kept with the run)."
    )
    database_augmentation: int = Field(
        5,
        ge=0,
        le=100,
        description="Replace each catalog vector by the normalised sum of itself and its this "
        "many nearest catalog neighbours, weighted by similarity ** expansion_alpha (0: off); "
        "done once when the index is built.",
    )
    query_expansion: int = Field(
        2,
        ge=0,
        le=100,
        description="Search again with the query plus its this many best results, weighted by "
        "similarity ** expansion_alpha (0: off); applied by every search of the run.",
    )
    expansion_alpha: float = Field(
        3.0, ge=0, le=20, description="Exponent of the weights of augmentation and expansion."
    )
    max_bytes_per_photo: IntOrAuto = Field(
        "auto",
        description="Memory a photo's vector may take in the index: full float32 when it fits, "
        "else PCA dimensions as int8 codes whose shortlists are re-ranked from the float32 "
        "vectors memory-mapped on disk; auto: full float32 below 200,000 photos, 400 bytes a "
        "photo above (recorded in the run's manifest).",
    )


class EvaluationConfig(_Section):
    """`evaluation`: held-out query photos, and the seeded sample of catalog queries for the
    leave-one-out figures and for calibrating probes when there are no held-out photos."""

    queries: Path | None = Field(
        None,
        description="Folder of photos that are not in the catalog: held-out precision@k and "
        "recall@10, and the probes are calibrated on them (recommended).",
    )
    queries_labels_csv: Path | None = Field(
        None, description="CSV image_id,label for the held-out photos; null: each one's folder."
    )
    sample: int = Field(
        500,
        ge=1,
        description="Catalog queries (a seeded sample) for the leave-one-out figures, and for "
        "calibrating probes without held-out photos.",
    )
    seed: int = Field(0, description="Seed of the sample of catalog queries.")
    same_product_similarity: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Without held-out photos, probes are calibrated on catalog queries with "
        "the catalog photos at least this similar to them left out (near-duplicates and other "
        "shots of the same product), so recall is not overestimated.",
    )
    simulated_queries: int = Field(
        200,
        ge=0,
        description="Without held-out photos, this many sampled catalog photos are also turned "
        "into simulated shopper photos (cropped or shrunk onto a new background, tilted, "
        "mirrored, recoloured, blurred, JPEG) and embedded, and the probes must reach "
        "target_recall on them too (each without its catalog photo and the photos near it); "
        "0: off.",
    )
    simulated_hardest: float = Field(
        0.25,
        gt=0,
        le=1,
        description="The probes must also reach target_recall on this fraction of the "
        "simulated shopper photos that sit farthest from every cluster centre (the hardest to "
        "search), a margin for shoppers' photos less like the catalog than the simulation; "
        "1: all of them alike.",
    )


class BulkConfig(_Section):
    """`bulk`: the bulk step that ends the train flow: neighbours per image, probes, the
    near-duplicate threshold, the CSV export and the rows per task."""

    enabled: bool = Field(True, description="End the train flow with a bulk step.")
    top_n: int = Field(10, ge=1, description="Neighbours per image.")
    probes: IntOrAuto = Field(
        "auto", description="Clusters searched per image; auto: the run's calibrated probes."
    )
    duplicate_threshold: float = Field(
        0.92,
        gt=0,
        le=1,
        description="Duplicate score (pixel prints, 1 = the same picture) at or above which two "
        "neighbours are near-duplicates (see Near-duplicate listings); chosen on "
        "benchmarks/bench_duplicates.py.",
    )
    duplicate_candidates: int = Field(
        5,
        ge=1,
        description="Nearest neighbours of each image whose duplicate score is computed (the "
        "scoring is most of the bulk time); raise it, up to top_n, when one picture is listed "
        "more times than this.",
    )
    csv: bool = Field(False, description="Also write neighbours.csv.")
    csv_raw: bool = Field(
        False,
        description="Write neighbours.csv cells as they are; by default a text cell starting "
        "with =, +, -, @ gets a leading ' so a spreadsheet shows it rather than running it as "
        "a formula (turn this on for programs that read the CSV).",
    )
    chunk_rows: int = Field(
        20_000, ge=1, description="Most catalog rows per bulk task (the chunks are evened out)."
    )


class RunsConfig(_Section):
    """`runs`: how many complete runs prune keeps, and how long a writer waits for another."""

    keep_last: int = Field(
        10, ge=1, description="Complete runs kept by `vasrch runs prune` and the nightly flow."
    )
    lock_timeout_s: float = Field(
        600.0,
        ge=0,
        description="How long a writer (train, nightly, bulk, extract) waits for another one "
        "on the same workspace before failing with a message naming it.",
    )
    lease_ttl_s: float = Field(
        60.0,
        ge=1,
        description="A workspace in object storage: how long its writer's lease lasts without "
        "a heartbeat (heartbeats every third of it) before another writer may take it.",
    )


class RunnerConfig(_Section):
    """`runner`: where tasks run: a thread pool, or a Dask cluster (an address or a local one)."""

    type: Literal["thread", "dask"] = Field(
        "thread", description="thread (a thread pool in this process) or dask."
    )
    max_workers: int | None = Field(
        None, ge=1, description="Threads of the thread runner; null: Prefect's default."
    )
    address: str | None = Field(
        None, description="Dask scheduler address; null starts a local cluster."
    )
    n_workers: int = Field(2, ge=1, description="Workers of a local Dask cluster.")


class GatesConfig(_Section):
    """`nightly.gates`: what a nightly run must reach to be promoted to LATEST."""

    figures: Literal["auto", "held_out", "leave_one_out"] = Field(
        "auto",
        description="Which figures the quality gates read: held_out (needs "
        "evaluation.queries), leave_one_out, or auto (held_out when there are held-out photos).",
    )
    min_recall_at_10: float = Field(
        0.9,
        ge=0,
        le=1,
        description="A nightly run below this recall@10 is recorded but not promoted.",
    )
    min_precision_at_10: float | None = Field(
        None, ge=0, le=1, description="Optional precision@10 gate (needs labels); null: no gate."
    )
    max_rejected_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Most catalog images a promoted run may have rejected, as a fraction.",
    )


class NightlyConfig(_Section):
    """`nightly`: the schedule of the nightly flow (cron, timezone) and its gates."""

    cron: str = Field("0 2 * * *", description="When the nightly flow runs (cron syntax).")
    timezone: str = Field("UTC", description="Timezone of the cron schedule.")
    gates: GatesConfig = Field(
        GatesConfig(), description="What a nightly run must reach to replace LATEST."
    )


class RefreshConfig(_Section):
    """`refresh`: bringing the served run up to date with the catalog between retrains, and
    when the drift since training makes a retrain due."""

    interval_minutes: float | None = Field(
        5,
        gt=0,
        description="Schedule of the refresh deployment (minutes between runs); null: no "
        "schedule (run it from the UI or `vasrch refresh`).",
    )
    max_added_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="A retrain is due once this share of the indexed photos was added by "
        "refreshes since the run whose clusters were trained.",
    )
    max_size_spread_growth: float = Field(
        1.5,
        ge=1,
        description="A retrain is due once the spread of cluster sizes (their coefficient of "
        "variation) grows past this multiple of its value at training.",
    )
    recall_margin: float = Field(
        0.02,
        ge=0,
        le=1,
        description="A retrain is due once recall@10 re-checked at the run's probes falls this "
        "far below search.target_recall.",
    )
    recheck_sample: int = Field(
        200, ge=1, description="Catalog photos sampled to re-check recall@10 at each refresh."
    )


class Config(_Section):
    """The whole config file: the catalog, the workspace, and one section per step."""

    catalog: CatalogConfig = Field(description="The product images and how they are read.")
    workspace: Path = Field(
        description="Folder for the feature cache and the runs, or an object store prefix "
        "(s3://bucket/prefix, gs://..., az://...; see Workspace in object storage): then runs "
        "are published there and this "
        "machine works in `workspace_cache`.",
        examples=["./workspace", "s3://shop-vasrch/workspace"],
    )
    workspace_url: str | None = Field(
        None,
        description="The store prefix the workspace lives in; set by giving `workspace` as a URL "
        "(`workspace` then holds the local cache folder).",
    )
    workspace_cache: Path | None = Field(
        None,
        description="Local folder a workspace in object storage is worked in (deletable at any "
        "time); null: $XDG_CACHE_HOME or ~/.cache, then vasrch/workspaces/<hash of the URL>.",
    )
    workspace_storage_options: dict[str, Any] = Field(
        {},
        description="Options for the workspace store's fsspec filesystem (endpoint_url, key, "
        "client_kwargs, token, connection_string, ...); credentials otherwise come from each "
        "cloud's standard sources (AWS_* variables, profiles and roles; Google application "
        "default credentials; AZURE_STORAGE_* variables).",
    )
    features: FeaturesConfig = Field(
        FeaturesConfig(), description="The network that turns an image into a vector."
    )
    clustering: ClusteringConfig = Field(
        ClusteringConfig(), description="The clusters of the index and how k is chosen."
    )
    search: SearchConfig = Field(SearchConfig(), description="How queries are answered.")
    evaluation: EvaluationConfig = Field(
        EvaluationConfig(), description="The queries that measure each run and calibrate probes."
    )
    bulk: BulkConfig = Field(
        BulkConfig(), description="Neighbours and near-duplicates of every catalog image."
    )
    runs: RunsConfig = Field(RunsConfig(), description="Keeping runs, and the workspace lock.")
    runner: RunnerConfig = Field(RunnerConfig(), description="Where the tasks run.")
    nightly: NightlyConfig = Field(
        NightlyConfig(), description="The nightly flow's schedule and quality gates."
    )
    refresh: RefreshConfig = Field(
        RefreshConfig(), description="Refreshes between retrains, and when a retrain is due."
    )

    @model_validator(mode="before")
    @classmethod
    def _workspace_in_store(cls, data: Any) -> Any:
        """`workspace: s3://...` becomes workspace_url, and `workspace` the local cache."""
        if isinstance(data, dict) and is_url(data.get("workspace")):
            url = data["workspace"]
            cache = data.get("workspace_cache") or default_workspace_cache(url)
            data = {**data, "workspace_url": url, "workspace": cache}
        return data

    @field_validator("workspace_url")
    @classmethod
    def _conditional_store(cls, value: str | None) -> str | None:
        """Publication and the lease need conditional writes: S3, GCS or Azure Blob."""
        if value is not None and url_scheme(value) not in WORKSPACE_STORE_SCHEMES:
            raise ValueError(
                "a workspace in object storage must be s3:// (S3 or compatible), gs:// or az://"
            )
        return value

    def to_yaml(self) -> str:
        """The resolved config as YAML (absolute paths)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def default_workspace_cache(url: str) -> Path:
    """The local cache of the workspace at `url` when the config names none."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vasrch" / "workspaces" / hashlib.sha256(url.encode()).hexdigest()[:16]


def check_inputs(cfg: Config) -> None:
    """Refuse, naming the field, input paths that do not exist: the catalog folder (unless the
    demo draws it), held-out photos, label files and a weights file. Cheap, so commands run it
    before starting Prefect or TensorFlow."""
    if is_url(cfg.catalog.path) and cfg.catalog.demo:
        raise ConfigError(f"catalog.demo: the demo is drawn into a folder, not {cfg.catalog.path}")
    checks = [
        ("catalog.path", cfg.catalog.path, Path.is_dir, not cfg.catalog.demo),
        ("catalog.labels_csv", cfg.catalog.labels_csv, Path.is_file, True),
        ("catalog.manifest", cfg.catalog.manifest, Path.is_file, True),
        ("evaluation.queries", cfg.evaluation.queries, Path.is_dir, True),
        ("evaluation.queries_labels_csv", cfg.evaluation.queries_labels_csv, Path.is_file, True),
    ]
    if cfg.features.weights not in ("imagenet", "none"):
        checks.append(("features.weights", Path(cfg.features.weights), Path.is_file, True))
    for field, path, exists, required in checks:
        if required and isinstance(path, Path) and not exists(path):
            kind = "folder" if exists is Path.is_dir else "file"
            raise ConfigError(f"{field}: {kind} not found: {path}")


def _cut(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters so a huge value cannot flood an error message."""
    text = repr(value) if not isinstance(value, Exception) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid config"]
    by_field: dict[str, list[str]] = {}
    for e in err.errors():
        # union members (constrained-int, literal['auto']) add loc parts a user never wrote
        parts = [str(p) for p in e["loc"] if isinstance(p, int) or str(p).isidentifier()]
        field = ".".join(parts) or "(top level)"
        if e["type"] == "extra_forbidden":
            text = f"  {field}: unknown key (value {_cut(e['input'])}); check the spelling"
        elif e["type"] == "missing":
            text = f"  {field}: required but missing"
        else:
            text = f"  {field} = {_cut(e.get('input'))}: {e['msg']}"
        by_field.setdefault(field, []).append(text)
    for texts in by_field.values():
        lines.append(texts[0] + "".join(f"; or {t.split(': ', 1)[1]}" for t in texts[1:]))
    return "\n".join(lines)


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (base / p.expanduser()).resolve()

    if not is_url(cfg.catalog.path):
        cfg.catalog.path = resolve(cfg.catalog.path)
    cfg.catalog.cache_dir = resolve(cfg.catalog.cache_dir)
    cfg.catalog.labels_csv = resolve(cfg.catalog.labels_csv)
    cfg.catalog.manifest = resolve(cfg.catalog.manifest)
    cfg.evaluation.queries = resolve(cfg.evaluation.queries)
    cfg.evaluation.queries_labels_csv = resolve(cfg.evaluation.queries_labels_csv)
    cfg.workspace = resolve(cfg.workspace)
    cfg.workspace_cache = resolve(cfg.workspace_cache)
    w = cfg.features.weights
    if w not in ("imagenet", "none"):
        cfg.features.weights = str(resolve(Path(w)))
    return cfg


def config_from_dict(data: dict[str, Any], base: Path, source: str = "<config>") -> Config:
    """Validate a dict as a config; relative paths resolve against `base`."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None
    return _resolve_paths(cfg, base)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`search.probes: 5`) in a nested config dict, returning a new dict."""
    out = yaml.safe_load(yaml.safe_dump(data))
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node[leaf] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would keep the last silently) and aliases
    (which let a few lines expand into gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"line {mark.line + 1}: YAML aliases (*name) are not allowed")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: duplicate key {_cut(key)}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """YAML text as Python data, refusing duplicate keys and aliases (ConfigError)."""
    return yaml.load(text, Loader=_StrictLoader)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config; `overrides` are dotted keys applied on top."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_cut(err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from None
    if overrides:
        data = apply_overrides(data or {}, overrides)
    return config_from_dict(data, path.resolve().parent, str(path))
