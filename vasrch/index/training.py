"""From catalog vectors to a search model: diagnostics, KMeans + index, and its evaluation."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from vasrch import progress
from vasrch.atomic_files import atomic_path, write_text_atomic
from vasrch.catalog.products import folder_products
from vasrch.config import ClusteringConfig, DiagnosticsConfig, EvaluationConfig, SearchConfig
from vasrch.errors import DataError
from vasrch.features.extraction import load_vectors
from vasrch.features.matrices import scratch_file
from vasrch.index.clustering import (
    Projection,
    fit_centring,
    fit_pca,
    plot_sweep,
    suggest_k,
    sweep_k,
    train_kmeans,
    training_rows,
)
from vasrch.index.evaluation import precision_at_k, recall_at_k, sample_queries
from vasrch.index.figures import Evaluation, Figures
from vasrch.index.search_index import (
    CHUNK_ROWS,
    SearchIndex,
    SearchResult,
    augment_database,
    build_index,
    compress,
)
from vasrch.layout import DiagnosticsLayout


@dataclass(frozen=True)
class Diagnostics:
    """The k sweep (k, inertia, silhouette), its suggested k, the rule that chose it, and a
    note when the suggestion sits at the edge of the sweep."""

    sweep: pd.DataFrame
    suggested_k: int
    rule: str
    note: str | None = None
    reason: str | None = None
    swept_k: int | None = None

    @property
    def sweep_suggestion(self) -> int:
        """The k the sweep itself suggested (suggested_k before scaling to the catalog)."""
        return self.swept_k or self.suggested_k


MIN_SWEEP_IMAGES = 6  # fewer images: no sweep; one cluster (exact search) is the index
MIN_ROWS_PER_CENTROID = 30  # FAISS's guideline: train k-means on at least 30 k vectors
# auto's cap while the sweep sees the whole catalog: the sweep's own choice rules there (on
# clothing-small, k = 73 under it against 115 up to 4 sqrt(n): held-out precision@10 0.762 / 0.758)
SWEPT_CATALOG_CAP = 100


def cluster_cap(diag: DiagnosticsConfig, n: int, max_train_rows: int | None = None) -> int:
    """The largest k for n vectors: `max_clusters`, or for `auto` SWEPT_CATALOG_CAP while the
    sweep sees all n (n <= diag.sample), else 4 sqrt(n) (the top of IVF practice), lowered when
    KMeans is fitted on a sample of `max_train_rows` so that every centroid has at least
    MIN_ROWS_PER_CENTROID of them; never below 2."""
    if diag.max_clusters != "auto":
        return diag.max_clusters
    if n <= diag.sample:
        return min(round(4 * math.sqrt(n)), SWEPT_CATALOG_CAP)
    cap = round(4 * math.sqrt(n))
    if max_train_rows is not None and max_train_rows < n:
        cap = min(cap, max_train_rows // MIN_ROWS_PER_CENTROID)
    return max(2, cap)


def scales_to_catalog(diag: DiagnosticsConfig, n: int, sample: int) -> bool:
    """Whether a sweep on `sample` of n vectors is scaled to all n (catalog_k): when it saw a
    sample and its bounds (k_min, k_max, max_clusters) are all auto."""
    return n > sample and diag.max_clusters == diag.k_min == diag.k_max == "auto"


def sweep_values(diag: DiagnosticsConfig, n: int, cap: int | None = None) -> list[int]:
    """The k values to sweep for n vectors: k_min..k_max by k_step, capped by `cap` (default
    cluster_cap) and n - 1. `auto` bounds grow with the catalog as IVF practice does (sqrt(n)
    to 4 sqrt(n)), and an auto step keeps about 16 values, the upper end included. Empty
    below MIN_SWEEP_IMAGES vectors; a k_min above the largest possible k is lowered to it
    with a warning."""
    if n < MIN_SWEEP_IMAGES:
        return []
    root = math.sqrt(n)
    cap = cap or cluster_cap(diag, n)
    top = min(round(4 * root) if diag.k_max == "auto" else diag.k_max, cap)
    if top >= n:
        warnings.warn(
            f"the sweep's largest k ({top}) is not below the number of images ({n}); "
            f"sweeping up to {n - 1}",
            stacklevel=2,
        )
        top = n - 1
    low = diag.k_min if diag.k_min != "auto" else min(max(2, round(root)), top)
    if low > top:
        warnings.warn(
            f"clustering.diagnostics.k_min ({low}) is above the largest k the sweep can use "
            f"for {n} images ({top}); sweeping k = {top} only",
            stacklevel=2,
        )
        low = top
    step = diag.k_step if diag.k_step != "auto" else max(1, math.ceil((top - low) / 15))
    ks = list(range(low, top + 1, step))
    if diag.k_step == "auto" and ks[-1] != top:
        ks.append(top)
    return ks


def edge_note(sweep: pd.DataFrame, suggested_k: int, cap: int) -> str | None:
    """A warning when the suggested k is the largest one swept while larger k were allowed:
    the best k may lie beyond the sweep."""
    largest = int(sweep["k"].max())
    if suggested_k < largest or largest >= cap:
        return None
    return (
        f"the suggested k ({suggested_k}) is the largest k swept: a larger k may be better; "
        "raise clustering.diagnostics.k_max (or set it to auto)"
    )


def diagnose(
    vectors: np.ndarray,
    diag: DiagnosticsConfig,
    seed: int = 0,
    n_components: int | None = None,
    minibatch_above: int = 20_000,
    max_train_rows: int | None = None,
) -> Diagnostics:
    """Sweep k on a seeded sample of at most `diag.sample` vectors, in PCA space when asked
    (`diag.n_components`, else the clustering's `n_components`; skipped when the vectors have
    no more dimensions than that), and suggest k for all of them (catalog_k). Below
    MIN_SWEEP_IMAGES vectors nothing is swept and the suggestion is k = 1: one cluster, so
    every search is exact."""
    x = vectors
    if len(x) > diag.sample:
        x = x[sample_queries(len(x), diag.sample, seed)]
    n_components = diag.n_components or n_components
    if n_components and n_components < min(x.shape):
        x = fit_pca(x, n_components, seed).transform(x)
    scaled = scales_to_catalog(diag, len(vectors), len(x))
    # a sample's k is scaled afterwards, so its sweep spans IVF's sqrt(n)..4 sqrt(n) in full
    cap = round(4 * math.sqrt(len(x))) if scaled else cluster_cap(diag, len(x))
    ks = sweep_values(diag, len(x), cap)
    if not ks:
        note = (
            f"{len(x)} images are too few to sweep k (it takes {MIN_SWEEP_IMAGES}); suggested "
            "k = 1: one cluster, so every search is exact"
        )
        sweep = pd.DataFrame(columns=["k", "inertia", "silhouette"])
        return Diagnostics(sweep, 1, "none", note, "too few photos to sweep k: one cluster")
    # one BLAS/OpenMP thread: on a busy 2-core machine their threads spin against each other
    # (the sweep on clothing-small took 63 s with the defaults, 19 s with one thread)
    with threadpool_limits(1):
        sweep = sweep_k(x, ks, seed, diag.silhouette_sample, minibatch_above)
    swept = suggest_k(sweep, diag.rule)
    note = edge_note(sweep, swept, min(cap, len(x) - 1))
    k, reason = catalog_k(diag, swept, ks, len(vectors), len(x), max_train_rows)
    return Diagnostics(sweep, k, diag.rule, note, reason, swept)


def catalog_k(
    diag: DiagnosticsConfig,
    swept: int,
    ks: list[int],
    n: int,
    sample: int,
    max_train_rows: int | None = None,
) -> tuple[int, str]:
    """The suggested k for n vectors from the sweep's suggestion `swept` on `sample` of them,
    and why. When the sweep saw a sample and its bounds are all auto, the suggestion keeps its
    place in IVF's k ~ sqrt(n) practice: k = swept * sqrt(n / sample) (the sweep's cost stays
    that of the sample); otherwise it is used as swept. Either way it is capped by
    cluster_cap for n."""
    swept_on = f"k = {ks[0]}..{ks[-1]} swept on {sample:,} of the {n:,} photos"
    reason = f"the sweep's suggestion ({diag.rule} rule; {swept_on})"
    k = swept
    if scales_to_catalog(diag, n, sample):
        ratio = swept / math.sqrt(sample)
        k = max(2, round(ratio * math.sqrt(n)))
        reason = (
            f"the sweep suggested {swept} ({diag.rule} rule; {swept_on}), {ratio:.2f} sqrt of "
            f"the sample; scaled to the catalog as {ratio:.2f} sqrt({n:,}) = {k}"
        )
    cap = cluster_cap(diag, n, max_train_rows)
    if k > cap:
        k = cap
        reason += (
            f"; lowered to max_clusters = {cap}"
            if diag.max_clusters != "auto"
            else f"; lowered to {cap} (max_clusters auto: at most 4 sqrt(n), and at least "
            f"{MIN_ROWS_PER_CENTROID} KMeans training rows a centroid)"
        )
    return k, reason


def save_diagnostics(diag: Diagnostics, folder: DiagnosticsLayout) -> Path:
    """Write sweep.parquet, suggested_k.json and the elbow/silhouette plot; return the plot."""
    folder.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder.sweep) as tmp:
        diag.sweep.to_parquet(tmp, index=False)
    suggestion = {
        "suggested_k": diag.suggested_k,
        "rule": diag.rule,
        "reason": diag.reason,
        "swept_k": diag.sweep_suggestion,
    }
    write_text_atomic(folder.suggested_k, json.dumps(suggestion))
    return plot_sweep(diag.sweep, diag.sweep_suggestion, folder.plot)


def load_diagnostics(folder: DiagnosticsLayout, note: str | None = None) -> Diagnostics:
    """The diagnostics `save_diagnostics` wrote (with the note the run recorded)."""
    suggested = json.loads(folder.suggested_k.read_text(encoding="utf-8"))
    return Diagnostics(
        pd.read_parquet(folder.sweep),
        int(suggested["suggested_k"]),
        suggested["rule"],
        note,
        suggested.get("reason"),
        suggested.get("swept_k"),
    )


def choose_k(cfg: ClusteringConfig, suggested: int | None, n: int) -> int:
    """The configured k, or the suggestion for `auto`; clamped to the number of images."""
    if cfg.num_clusters == "auto":
        if suggested is None:
            raise ValueError("num_clusters is auto but no suggestion was made")
        k = suggested
    else:
        k = cfg.num_clusters
    if k > n:
        warnings.warn(f"num_clusters {k} is more than the {n} images; using {n}", stacklevel=2)
        k = n
    return k


def k_reason(cfg: ClusteringConfig, diag: Diagnostics, k: int) -> str:
    """Why a run's index has k clusters: the configured num_clusters, or the diagnostics'
    reason for `auto`; with the clamp to the number of images when one applied."""
    if cfg.num_clusters == "auto":
        wanted, reason = diag.suggested_k, diag.reason or f"the sweep's suggestion ({diag.rule})"
    else:
        wanted, reason = cfg.num_clusters, f"clustering.num_clusters = {cfg.num_clusters}"
    return reason if k == wanted else f"{reason}; the index has k = {k}"


def fit_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    k: int,
    fingerprint: str,
    cfg: ClusteringConfig,
    init_centroids: np.ndarray | None = None,
    search: SearchConfig | None = None,
    prints: np.ndarray | None = None,
    scratch: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[SearchIndex, object]:
    """(search index, fitted scikit-learn KMeans): PCA or centring, KMeans on the unit vectors,
    then the retrieval steps of `search` (its defaults when None): database-side augmentation
    of the stored vectors and query expansion, both kept with the index, and the vectors held
    within `search.max_bytes_per_photo`; the index keeps the images' duplicate prints when
    given.

    Streamed: KMeans is fitted on `cfg.max_train_rows` sampled vectors, and every other step
    reads and writes `chunk_rows` vectors at a time; with a `scratch` folder the full-size
    matrices (grouped, augmented) are .npy files there, memory-mapped, so with memory-mapped
    `vectors` memory holds the sample, the chunk and what the budget keeps (the codes)."""
    search = search or SearchConfig()
    projection: Projection | None = None
    if cfg.n_components:
        projection = fit_pca(vectors, cfg.n_components, cfg.seed, cfg.max_train_rows)
    elif search.centre:
        projection = fit_centring(vectors)
    # one BLAS thread, as for the sweep: OpenBLAS threads spinning against each other made
    # KMeans at k=76 on clothing-small take 20-120 s on a busy 2-core machine
    progress.report("kmeans", 0, 1)
    with threadpool_limits(1):
        sample = training_rows(len(vectors), k, cfg.max_train_rows, cfg.seed)
        model = train_kmeans(
            _projected(vectors[sample], projection),
            k,
            cfg.seed,
            cfg.minibatch_above,
            init_centroids=init_centroids,
        )
        labels = np.concatenate(
            [
                model.predict(_projected(vectors[start : start + chunk_rows], projection))
                for start in range(0, len(vectors), chunk_rows)
            ]
        )
    progress.report("kmeans", 1)
    files = _ScratchFiles(scratch)
    index = build_index(
        ids,
        vectors,
        model.cluster_centers_,
        labels,
        fingerprint,
        projection,
        expansion=search.query_expansion,
        expansion_alpha=search.expansion_alpha,
        prints=prints,
        out=files.path("grouped.npy"),
        chunk_rows=chunk_rows,
    )
    if search.database_augmentation:
        with threadpool_limits(1):
            index = augment_database(
                index,
                search.database_augmentation,
                search.expansion_alpha,
                out=files.path("augmented.npy"),
            )
        files.remove("grouped.npy")
    return compress(index, search.max_bytes_per_photo, seed=cfg.seed), model


def _projected(rows: np.ndarray, projection: Projection | None) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x if projection is None else projection.transform(x)


@dataclass(frozen=True)
class _ScratchFiles:
    """Files for full-size matrices in a scratch folder (None: matrices stay in memory)."""

    folder: Path | None

    def path(self, name: str) -> Path | None:
        return scratch_file(self.folder, name)

    def remove(self, name: str) -> None:
        if self.folder is not None:
            (self.folder / name).unlink(missing_ok=True)


def catalog_labels(catalog: pd.DataFrame, labels_csv: Path | None = None) -> pd.Series | None:
    """image_id -> label, from a CSV (image_id,label), else from the products' `category` (a
    manifest column, or in folder mode the folder the photo sits in: `shoes/sneakers/a.jpg` is
    a `sneakers`) when every photo has one; None when there are no labels or only one."""
    if labels_csv is not None:
        table = pd.read_csv(labels_csv, dtype=str)
        missing = {"image_id", "label"} - set(table.columns)
        if missing:
            raise DataError(f"{labels_csv}: needs columns image_id,label (missing {missing})")
        return table.set_index("image_id")["label"]
    if "category" in catalog.columns:
        category = catalog["category"].fillna("").astype(str)
    else:
        category = catalog.join(folder_products(catalog["image_id"]), on="image_id")["category"]
    if len(catalog) == 0 or (category == "").any():
        return None
    labels = pd.Series(category.to_numpy(), index=catalog["image_id"].to_numpy())
    return labels if labels.nunique() > 1 else None


@dataclass(frozen=True)
class HeldOut:
    """Held-out query photos (not in the catalog): ids, feature vectors, labels if known."""

    ids: np.ndarray
    vectors: np.ndarray
    labels: pd.Series | None


def held_out_photos(
    queries: pd.DataFrame,
    catalog: pd.DataFrame,
    cache_dir: Path,
    labels_csv: Path | None = None,
) -> HeldOut:
    """The held-out photos' vectors and labels (CSV, else parent folder). Photos whose bytes are
    also in the catalog are left out with a warning: they would not be held out."""
    copies = queries["sha256"].isin(set(catalog["sha256"]))
    if copies.any():
        warnings.warn(
            f"{int(copies.sum())} held-out photos are byte-for-byte in the catalog (e.g. "
            f"{queries.loc[copies, 'image_id'].iloc[0]}); they are left out of the held-out "
            "figures",
            stacklevel=2,
        )
    ids, vectors = load_vectors(cache_dir, queries[~copies])
    if len(ids) == 0:
        raise DataError("no held-out photo could be embedded; check evaluation.queries")
    return HeldOut(ids, vectors, catalog_labels(queries[~copies], labels_csv))


@dataclass(frozen=True)
class SimulatedQueries:
    """Simulated shopper photos of catalog photos (vasrch.features.shopper_photos): the id of
    each one's catalog photo, and their feature vectors."""

    source_ids: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class _QuerySet:
    """Prepared queries to calibrate on: rows to leave out of their answers (-1: none) and,
    with `far_from`, the vectors whose near photos are left out too (the query's product)."""

    queries: np.ndarray
    exclude: np.ndarray | None
    anchors: np.ndarray | None
    far_from: float | None


TOP = 10
NEAR_EXTRA = 20  # extra answers fetched so that 10 remain after leaving out near photos


def _keep_far(
    index: SearchIndex, anchors: np.ndarray, rows: np.ndarray, similarity: float
) -> np.ndarray:
    """The first TOP answer rows whose stored vector is less than `similarity` to the anchor
    (the query, or the catalog photo it was made from: its near-duplicates and other shots of
    its product left out); -1 pads."""
    sims = np.einsum("qd,qmd->qm", anchors, index.vectors[np.maximum(rows, 0)])
    keep = (rows >= 0) & (sims < similarity)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :TOP]
    kept = np.take_along_axis(rows, order, axis=1)
    kept[~np.take_along_axis(keep, order, axis=1)] = -1
    return kept


def _answers(
    index: SearchIndex,
    queries: np.ndarray,
    probes: int,
    exclude: np.ndarray | None,
    far_from: float | None,
    anchors: np.ndarray | None = None,
) -> SearchResult:
    """The top 10 of prepared queries (leaving out `exclude` rows, and with `far_from` the
    answers at least that similar to the anchors, the queries themselves by default)."""
    if far_from is None:
        rows, scores = index.search_rows(queries, TOP, probes, exclude)
        return index.result_of(rows, scores)
    rows, _ = index.search_rows(queries, TOP + NEAR_EXTRA, probes, exclude)
    kept = _keep_far(index, queries if anchors is None else anchors, rows, far_from)
    return index.result_of(kept, np.zeros(kept.shape, dtype=np.float32))


def _set_answers(index: SearchIndex, qs: _QuerySet, probes: int) -> SearchResult:
    return _answers(index, qs.queries, probes, qs.exclude, qs.far_from, qs.anchors)


def _simulated_set(
    index: SearchIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    simulated: SimulatedQueries,
    far: float,
) -> _QuerySet:
    """Simulated shopper photos, each without its catalog photo and the photos near that one."""
    rows = index.rows_of(list(simulated.source_ids))
    position = pd.Series(np.arange(len(ids)), index=ids)
    sources = vectors[position.reindex(simulated.source_ids).to_numpy()]
    return _QuerySet(
        index.prepare_queries(simulated.vectors), rows, index.prepare_queries(sources), far
    )


def _hardest(index: SearchIndex, qs: _QuerySet, fraction: float) -> _QuerySet | None:
    """The `fraction` of the queries least near any centroid (at least one); None when that is
    all of them."""
    count = max(1, round(fraction * len(qs.queries)))
    if count >= len(qs.queries):
        return None
    rows = np.argsort(index.centroid_affinity(qs.queries), kind="stable")[:count]

    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    return _QuerySet(qs.queries[rows], take(qs.exclude), take(qs.anchors), qs.far_from)


def _figures(
    index: SearchIndex,
    queries: np.ndarray,
    probes: int,
    exclude: np.ndarray | None,
    query_labels: np.ndarray | None,
    labels: pd.Series | None,
) -> Figures:
    """recall@10 against exact search and, with labels, precision@5/@10 of the index and of
    exact search."""
    exact = _answers(index.exact(), queries, 1, exclude, None)
    approx = _answers(index, queries, probes, exclude, None)
    recall = recall_at_k(approx, exact, TOP)
    if labels is None or query_labels is None:
        return Figures(queries=len(queries), recall_at_10=recall)
    return Figures(
        queries=len(queries),
        recall_at_10=recall,
        precision_at_5=precision_at_k(approx, query_labels, labels, 5),
        precision_at_10=precision_at_k(approx, query_labels, labels, 10),
        exact_precision_at_10=precision_at_k(exact, query_labels, labels, TOP),
    )


def evaluate_index(
    index: SearchIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    labels: pd.Series | None,
    search: SearchConfig,
    evaluation: EvaluationConfig,
    held_out: HeldOut | None = None,
    simulated: SimulatedQueries | None = None,
) -> Evaluation:
    """Calibrate probes and measure the index.

    With probes `auto`, the probes are the fewest (up to `search.max_probes`) whose recall@10
    against exact search reaches `search.target_recall`, as FAISS users tune nprobe. They are
    calibrated on the held-out photos when there are any; else on sampled catalog photos, each
    with itself and the catalog photos at least `evaluation.same_product_similarity` similar
    to it left out of both answers, since a new photo has no near-duplicate or sibling shot in
    the catalog and catalog queries would otherwise overestimate recall; and, when `simulated`
    shopper photos are given, the recall must reach the target on them too (each without its
    catalog photo and the photos near that one), since a shopper's photo is less like the
    catalog than its own photos are, and on the `evaluation.simulated_hardest` of them that sit
    farthest from every centroid.

    Figures are reported per kind of query: `leave_one_out` (catalog photos, each excluding
    itself) and, with held-out photos, `held_out`; `recall_at_10` is the calibration's.
    """
    rows = sample_queries(len(ids), evaluation.sample, evaluation.seed)
    catalog_queries = index.prepare_queries(vectors[rows])
    catalog_exclude = index.rows_of(list(ids[rows]))
    far = evaluation.same_product_similarity
    if held_out is not None:
        sets = [_QuerySet(index.prepare_queries(held_out.vectors), None, None, None)]
        calibrated_on = f"{len(held_out.ids)} held-out photos"
    else:
        sets = [_QuerySet(catalog_queries, catalog_exclude, None, far)]
        calibrated_on = (
            f"{len(rows)} catalog photos, each without the catalog photos at least "
            f"{far} similar to it"
        )
        if simulated is not None and len(simulated.source_ids):
            shoppers = _simulated_set(index, ids, vectors, simulated, far)
            hardest = _hardest(index, shoppers, evaluation.simulated_hardest)
            sets += [shoppers] if hardest is None else [shoppers, hardest]
            calibrated_on += (
                f", and {len(simulated.source_ids)} simulated shopper photos of catalog "
                "photos, each without its catalog photo and the photos near that one"
            )
            if hardest is not None:
                calibrated_on += (
                    f" (also the {len(hardest.queries)} farthest from every cluster centre)"
                )
    exact = [_set_answers(index.exact(), qs, 1) for qs in sets]
    most = min(index.k, search.max_probes)
    probes = search.probes
    candidates = range(1, most + 1) if probes == "auto" else [min(int(probes), index.k)]
    for p in candidates:
        recall = min(
            recall_at_k(_set_answers(index, qs, p), e, TOP)
            for qs, e in zip(sets, exact, strict=True)
        )
        if recall >= search.target_recall:
            break
    qlabels = None if labels is None else labels.reindex(ids[rows]).to_numpy(dtype=object)
    leave_one_out = _figures(index, catalog_queries, p, catalog_exclude, qlabels, labels)
    held = None
    if held_out is not None:
        hlabels = held_out.labels
        hq = None if hlabels is None else hlabels.reindex(held_out.ids).to_numpy(dtype=object)
        held = _figures(index, sets[0].queries, p, None, hq, labels)
    return Evaluation(p, recall, calibrated_on, leave_one_out, held)


def recheck_recall(
    index: SearchIndex,
    ids: np.ndarray,
    vectors: np.ndarray,
    probes: int,
    evaluation: EvaluationConfig,
    sample: int,
) -> float:
    """recall@10 at `probes` on `sample` catalog photos, measured as a run without held-out
    photos calibrates (each without itself and the catalog photos near it)."""
    rows = sample_queries(len(ids), sample, evaluation.seed)
    queries = index.prepare_queries(vectors[rows])
    exclude = index.rows_of(list(ids[rows]))
    far = evaluation.same_product_similarity
    exact = _answers(index.exact(), queries, 1, exclude, far)
    return recall_at_k(_answers(index, queries, probes, exclude, far), exact, TOP)
