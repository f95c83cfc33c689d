"""PCA projection, the k sweep (inertia + silhouette), a suggested k, its plot, and KMeans training.

All inputs are float32 matrices whose rows are L2-normalised feature vectors (cosine = dot).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from vasrch.fileio import atomic_path

SuggestRule = Literal["silhouette", "knee", "both"]
_TRANSFORM_ROWS = 65_536  # rows projected at once, so memory stays bounded on large catalogs


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def _as_matrix(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array (n, d); got shape {x.shape}")
    return x


@dataclass(frozen=True, eq=False)
class Projection:
    """A fitted PCA: `transform` centres, projects and re-normalises rows (cosine still works)."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (c, d)
    explained_variance_ratio: np.ndarray  # (c,)

    @property
    def input_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.components.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project rows of `x` (n, input_dim) to (n, output_dim) float32 unit vectors."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"the projection expects vectors of dimension {self.input_dim}, got shape "
                f"{x.shape}; were they extracted with the same backbone as the index?"
            )
        out = np.empty((x.shape[0], self.output_dim), dtype=np.float32)
        for start in range(0, x.shape[0], _TRANSFORM_ROWS):
            block = x[start : start + _TRANSFORM_ROWS]
            out[start : start + len(block)] = l2_normalise((block - self.mean) @ self.components.T)
        return out

    def save(self, path: str | Path) -> Path:
        """Write an .npz (no pickle) atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                mean=self.mean,
                components=self.components,
                explained_variance_ratio=self.explained_variance_ratio,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(
                mean=data["mean"].astype(np.float32),
                components=data["components"].astype(np.float32),
                explained_variance_ratio=data["explained_variance_ratio"].astype(np.float32),
            )


def fit_pca(vectors: np.ndarray, n_components: int, seed: int = 0) -> Projection:
    """Fit PCA with `n_components` (clamped to min(n, d) with a warning)."""
    x = _as_matrix(vectors)
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}")
    limit = min(x.shape)
    if n_components > limit:
        warnings.warn(
            f"n_components={n_components} is more than min(n_vectors, dim)={limit}; using {limit}",
            stacklevel=2,
        )
        n_components = limit
    pca = PCA(n_components=n_components, random_state=seed).fit(x)
    return Projection(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float32),
    )


def _kmeans(
    k: int, n: int, seed: int, minibatch_above: int, n_init: int, init: str | np.ndarray
) -> KMeans | MiniBatchKMeans:
    if n > minibatch_above:
        return MiniBatchKMeans(
            n_clusters=k,
            init=init,
            n_init=n_init,
            random_state=seed,
            batch_size=max(4096, 4 * k),
            max_no_improvement=20,
        )
    return KMeans(n_clusters=k, init=init, n_init=n_init, random_state=seed)


def sweep_k(
    vectors: np.ndarray,
    k_values: Sequence[int],
    seed: int = 0,
    silhouette_sample: int = 10_000,
    minibatch_above: int = 20_000,
) -> pd.DataFrame:
    """Fit KMeans for each k; return columns k, inertia, silhouette (on a seeded sample)."""
    x = _as_matrix(vectors)
    n = x.shape[0]
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise ValueError("k_values is empty; give at least one k >= 2")
    if ks[0] < 2:
        raise ValueError(
            f"every k in the sweep must be at least 2 (silhouette needs 2); got {ks[0]}"
        )
    dropped = [k for k in ks if k >= n]
    if dropped:
        warnings.warn(
            f"dropping k values {dropped}: k must be below the number of vectors ({n})",
            stacklevel=2,
        )
        ks = [k for k in ks if k < n]
    if not ks:
        raise ValueError(f"no k value is below the number of vectors ({n}); add more images")
    sample = min(silhouette_sample, n)
    rows = []
    for k in ks:
        model = _kmeans(k, n, seed, minibatch_above, n_init=3, init="k-means++").fit(x)
        labels = model.labels_
        if len(np.unique(labels)) < 2:
            silhouette = float("nan")
        else:
            silhouette = float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
        rows.append({"k": k, "inertia": float(model.inertia_), "silhouette": silhouette})
    return pd.DataFrame(rows, columns=["k", "inertia", "silhouette"])


def _knee(sweep: pd.DataFrame) -> int:
    k = sweep["k"].to_numpy(dtype=float)
    inertia = sweep["inertia"].to_numpy(dtype=float)
    if len(k) < 3:
        return int(k[0])
    x = (k - k[0]) / (k[-1] - k[0])
    span = inertia.max() - inertia.min()
    y = (inertia - inertia.min()) / span if span > 0 else np.zeros_like(inertia)
    # The chord of a decreasing curve runs from (0, y0) to (1, y_last); distance below it.
    chord = y[0] + (y[-1] - y[0]) * x
    return int(k[int(np.argmax(chord - y))])


def suggest_k(sweep: pd.DataFrame, rule: SuggestRule = "both") -> int:
    """Suggest k from a sweep table (k, inertia, silhouette); ties go to the smallest k.

    - "silhouette": the k with the highest silhouette.
    - "knee": Kneedle-style knee of the inertia curve: with k and inertia each scaled to [0, 1],
      the k whose point lies furthest below the chord from the first to the last point.
    - "both": the k with the highest silhouette among the k no smaller than the knee (the
      silhouette often peaks at k = 2 on real features; the knee keeps the suggestion away from
      such under-segmentation, the silhouette picks the best separated k beyond it).
    """
    if sweep.empty:
        raise ValueError("the sweep is empty; run sweep_k with at least one k first")
    table = sweep.sort_values("k").reset_index(drop=True)
    if rule == "knee":
        return _knee(table)
    if rule == "both":
        table = table[table["k"] >= _knee(table)]
    elif rule != "silhouette":
        raise ValueError(f"rule must be 'silhouette', 'knee' or 'both', got {rule!r}")
    scores = table["silhouette"].to_numpy(dtype=float)
    if np.all(np.isnan(scores)):
        return int(table["k"].iloc[0])
    return int(table["k"].iloc[int(np.nanargmax(scores))])


def plot_sweep(sweep: pd.DataFrame, suggested_k: int | None, path: str | Path) -> Path:
    """Save the elbow (inertia) and silhouette curves on twin axes as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    table = sweep.sort_values("k")
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(table["k"], table["inertia"], "o-", color="tab:blue", label="inertia")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("inertia (within-cluster sum of squares)", color="tab:blue")
    twin = ax.twinx()
    twin.plot(table["k"], table["silhouette"], "s--", color="tab:orange", label="silhouette")
    twin.set_ylabel("silhouette score", color="tab:orange")
    if suggested_k is not None:
        ax.axvline(suggested_k, color="tab:green", linestyle=":", linewidth=2)
        ax.set_title(f"Elbow and silhouette (suggested k = {suggested_k})")
    else:
        ax.set_title("Elbow and silhouette")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def train_kmeans(
    vectors: np.ndarray,
    k: int,
    seed: int = 0,
    minibatch_above: int = 20_000,
    init_centroids: np.ndarray | None = None,
    max_train_rows: int | None = None,
) -> KMeans | MiniBatchKMeans:
    """Fit KMeans (MiniBatchKMeans when more than `minibatch_above` rows are fitted).

    `init_centroids` of shape (k, d) warm-starts from a previous model (nightly retraining); other
    shapes are ignored with a warning. With `max_train_rows`, the model is fitted on a seeded
    random sample of that many rows: its `labels_` then cover the sample only, so label every row
    with `model.predict(vectors)`. Centroids learnt from a few hundred rows per cluster are as
    good for search as those from all rows, and training cost stops growing with the catalog.
    """
    x = _as_matrix(vectors)
    n, d = x.shape
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} is more than the number of vectors ({n}); choose k <= {n}")
    if max_train_rows is not None and n > max_train_rows:
        if max_train_rows < k:
            raise ValueError(f"max_train_rows={max_train_rows} must be at least k={k}")
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_train_rows, replace=False))
        x = x[rows]
        n = max_train_rows
    init: str | np.ndarray = "k-means++"
    n_init = 3 if n * k <= 50_000_000 else 1
    if init_centroids is not None:
        init_centroids = np.asarray(init_centroids, dtype=np.float32)
        if init_centroids.shape == (k, d):
            init, n_init = init_centroids, 1
        else:
            warnings.warn(
                f"init_centroids of shape {init_centroids.shape} do not match (k, d) = "
                f"{(k, d)}; starting from k-means++ instead",
                stacklevel=2,
            )
    return _kmeans(k, n, seed, minibatch_above, n_init=n_init, init=init).fit(x)
