"""The four functions of the original vasrch library, on top of the domain modules (no Prefect).

extract_features(img_folder, save_to)
get_optimal_num_clusters(features_folder, max_clusters=100, n_components=10)
train_clusters(features_folder, model_filename, csv_filename, num_clusters)
search_similar_images(image_path, model_filename, csv_file, top_n)
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from vasrch.atomic_files import atomic_path, write_text_atomic
from vasrch.catalog.products import FilterSpec, Products
from vasrch.catalog.scan import scan_catalog, write_catalog
from vasrch.config import ClusteringConfig, DiagnosticsConfig
from vasrch.errors import DataError
from vasrch.features.backbones import BackboneSpec, fingerprint, load_backbone
from vasrch.features.extraction import (
    ExtractSummary,
    extract_chunk,
    load_vectors,
    plan_chunks,
    summarize,
)
from vasrch.hashing import IntegrityError, check_hashes, folder_hashes
from vasrch.index.clustering import plot_sweep
from vasrch.index.search_index import load_index, save
from vasrch.index.training import diagnose, fit_index
from vasrch.layout import SavedFeaturesLayout, SavedIndexLayout, saved_index
from vasrch.search.parameters import check_count, resolve_search_params
from vasrch.search.searcher import embed_files


@dataclass(frozen=True)
class OptimalClusters:
    """What get_optimal_num_clusters found: the sweep table, the suggested k, the saved plot."""

    sweep: pd.DataFrame
    suggested_k: int
    plot: Path


def extract_features(
    img_folder: str | Path, save_to: str | Path, model: str = "efficientnet_lite0", **features
) -> ExtractSummary:
    """Embed every image under `img_folder` (recursively) into Parquet shards under `save_to`.

    `model` is efficientnet_lite0 (default), efficientnet_lite1, efficientnet_lite2 or a
    keras.applications name; further keyword
    arguments are BackboneSpec fields (weights, layer, pooling, image_size). Only images not
    already in `save_to` are extracted. Returns the counts (seen, new, reused, rejected) and
    every rejected image with its reason (`summary.rejections`).
    """
    start = time.perf_counter()
    spec = BackboneSpec(name=model, **features)
    fp = fingerprint(spec)
    saved = SavedFeaturesLayout(Path(save_to))
    cache = saved.cache(fp).root
    scan = scan_catalog(img_folder)
    backbone = load_backbone(spec)
    chunks = plan_chunks(scan.table, cache, 1024)
    results = [extract_chunk(rows, backbone, cache) for rows in chunks]
    write_catalog(scan.table, saved.catalog)
    meta = {
        "catalog_root": str(Path(img_folder).resolve()),
        "fingerprint": fp,
        "backbone": asdict(spec),
    }
    write_text_atomic(saved.meta, json.dumps(meta, indent=2))
    return summarize(scan, results, cache, fp, time.perf_counter() - start)


def _features(features_folder: str | Path) -> tuple[dict, pd.DataFrame, object, object]:
    """(metadata, catalog table, ids, vectors) of a folder extract_features saved to."""
    saved = SavedFeaturesLayout(Path(features_folder))
    if not saved.meta.is_file():
        raise FileNotFoundError(
            f"{saved.root} holds no vasrch features; run "
            f"extract_features(img_folder, {str(saved.root)!r})"
        )
    meta = json.loads(saved.meta.read_text())
    catalog = pd.read_parquet(saved.catalog)
    ids, vectors = load_vectors(saved.cache(meta["fingerprint"]).root, catalog)
    return meta, catalog, ids, vectors


def get_optimal_num_clusters(
    features_folder: str | Path, max_clusters: int = 100, n_components: int | None = 10
) -> OptimalClusters:
    """Sweep k from 2 to max_clusters on PCA(n_components) features; save the elbow and
    silhouette plot as elbow_silhouette.png in the features folder (never opens a window)."""
    _, _, _, vectors = _features(features_folder)
    n = len(vectors)
    if max_clusters >= n:
        warnings.warn(
            f"max_clusters={max_clusters} is not below the number of images ({n}); using {n - 1}",
            stacklevel=2,
        )
        max_clusters = max(2, n - 1)
    diag_cfg = DiagnosticsConfig(
        k_min=2, k_max=max_clusters, k_step=1, max_clusters=max_clusters, n_components=n_components
    )
    diag = diagnose(vectors, diag_cfg, n_components=n_components)
    plot = plot_sweep(diag.sweep, diag.suggested_k, SavedFeaturesLayout(Path(features_folder)).plot)
    return OptimalClusters(diag.sweep, diag.suggested_k, plot)


def train_clusters(
    features_folder: str | Path,
    model_filename: str | Path,
    csv_filename: str | Path,
    num_clusters: int,
) -> None:
    """Fit KMeans with `num_clusters`; write the fitted scikit-learn model (joblib) at
    `model_filename`, the search index beside it (<model_filename>.index/, with the sha256 of
    each of its files written last), and a CSV of each image (relative path with extension)
    and its cluster."""
    meta, _, ids, vectors = _features(features_folder)
    index, model = fit_index(ids, vectors, num_clusters, meta["fingerprint"], ClusteringConfig())
    model_filename = Path(model_filename)
    with atomic_path(model_filename) as tmp:
        joblib.dump(model, tmp)
    saved = saved_index(model_filename)
    saved.hashes.unlink(missing_ok=True)
    save(index, saved.root)
    write_text_atomic(saved.meta, json.dumps(meta, indent=2))
    hashes = folder_hashes(saved.root, skip=[saved.hashes])
    write_text_atomic(saved.hashes, json.dumps(hashes, indent=2))
    table = pd.DataFrame({"image": np.asarray(index.ids), "cluster": index.labels})
    table = table.sort_values(["cluster", "image"], ignore_index=True)
    with atomic_path(csv_filename) as tmp:
        table.to_csv(tmp, index=False)


def _verify_saved_index(saved: SavedIndexLayout, model_filename: str | Path) -> None:
    """Check every file of the index folder against hashes.json (none missing, none added)."""
    if not saved.hashes.is_file():
        raise FileNotFoundError(
            f"no verifiable search index beside {model_filename} ({saved.hashes} is missing); "
            "train it with train_clusters(...)"
        )
    try:
        recorded = json.loads(saved.hashes.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or saved.meta.name not in recorded:
            raise IntegrityError(f"{saved.hashes.name} lists no {saved.meta.name}")
        present = {
            p.relative_to(saved.root).as_posix()
            for p in saved.root.rglob("*")
            if p.is_file() and p != saved.hashes
        }
        check_hashes(saved.root, recorded, sorted(present | set(recorded)))
    except (ValueError, IntegrityError) as err:
        raise IntegrityError(
            f"search index {saved.root} is damaged or was changed after train_clusters wrote "
            f"it ({err}); train it again with train_clusters(...)"
        ) from None


def search_similar_images(
    image_path: str | Path,
    model_filename: str | Path,
    csv_file: str | Path,
    top_n: int = 10,
    probes: int | None = None,
    filters: FilterSpec | None = None,
) -> list[str]:
    """The top_n catalog images most similar to `image_path`, best first, as file paths. The
    clusters come from the CSV's model (`csv_file` names the images train_clusters listed);
    `probes` nearest clusters are searched (default: vasrch.search.parameters' rule). `filters`
    keeps images by their folder, e.g. {"category": ["shoes"]} (the folder mode's metadata)."""
    check_count("top_n", top_n)
    check_count("probes", probes)
    saved = saved_index(Path(model_filename))
    _verify_saved_index(saved, model_filename)
    meta = json.loads(saved.meta.read_text(encoding="utf-8"))
    index = load_index(saved.root, expected_fingerprint=meta["fingerprint"])
    listed = set(pd.read_csv(csv_file)["image"])
    backbone = load_backbone(BackboneSpec(**meta["backbone"]))
    vectors, _, bad = embed_files([image_path], backbone)
    if bad:
        raise DataError(f"cannot use {image_path} as a query: {bad[0][1]}")
    params = resolve_search_params(k=index.k, n=index.n, top_n=top_n, probes=probes)
    products = Products.from_catalog(pd.DataFrame({"image_id": np.asarray(index.ids)}))
    allowed = products.allowed(index.ids, filters)
    result = index.search(vectors, params.top_n, params.probes, allowed=allowed)
    root = Path(meta["catalog_root"])
    return [str(root / i) for i in result.ids[0] if i and i in listed]
