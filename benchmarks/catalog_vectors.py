"""Synthetic feature vectors that behave like a catalog's, fitted on real ones (issue 22).

The real vectors are split into `clusters` KMeans clusters; each keeps its mean, its `rank`
leading PCA directions with their spreads, and the spread left over (isotropic noise), and its
share of the photos. A synthetic photo belongs to a *group* (a product line: `group_size`
photos, one cluster, a centre drawn with the share `grouping` of the cluster's variance) and
lies around the group's centre with the rest of it; then it is L2-normalised like an extracted
feature. Groups are what isotropic mixtures lack: real photos have close neighbours (siblings)
inside broad categories, which is what makes recall need several probes.

Generation streams in seeded chunks (`generate(model, n, seed)` yields float32 blocks), so ten
million 1,280-d vectors never sit in memory at once; the same seed gives the same vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CHUNK = 65_536


@dataclass(frozen=True)
class CatalogModel:
    """What the generator keeps of the real vectors."""

    means: np.ndarray  # (clusters, dim)
    bases: np.ndarray  # (clusters, rank, dim) orthonormal rows
    spreads: np.ndarray  # (clusters, rank) standard deviation along each basis row
    noise: np.ndarray  # (clusters,) standard deviation left in every other direction
    weights: np.ndarray  # (clusters,) share of the photos
    grouping: float = 0.0  # share of a cluster's variance between group centres
    group_size: int = 8  # photos a group holds

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return int(self.means.shape[1])


def fit(
    vectors: np.ndarray,
    clusters: int = 16,
    rank: int = 48,
    grouping: float = 0.0,
    group_size: int = 8,
    seed: int = 0,
) -> CatalogModel:
    """The model of real `vectors` (rows, L2-normalised): KMeans clusters, each with its PCA."""
    from sklearn.cluster import KMeans

    x = np.asarray(vectors, dtype=np.float64)
    labels = KMeans(clusters, n_init=3, random_state=seed).fit_predict(x)
    dim = x.shape[1]
    means = np.zeros((clusters, dim))
    bases = np.zeros((clusters, rank, dim))
    spreads = np.zeros((clusters, rank))
    noise = np.zeros(clusters)
    for c in range(clusters):
        members = x[labels == c]
        means[c] = members.mean(axis=0)
        centred = members - means[c]
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        var = s**2 / max(len(members) - 1, 1)
        r = min(rank, len(var))
        bases[c, :r] = vt[:r]
        spreads[c, :r] = np.sqrt(var[:r])
        noise[c] = np.sqrt(var[r:].sum() / max(dim - r, 1))
    weights = np.bincount(labels, minlength=clusters) / len(x)
    return CatalogModel(
        means.astype(np.float32),
        bases.astype(np.float32),
        spreads.astype(np.float32),
        noise.astype(np.float32),
        weights,
        grouping,
        group_size,
    )


def _chunk(model: CatalogModel, rows: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` photos in fresh groups, normalised."""
    groups = -(-rows // model.group_size)
    cluster = rng.choice(len(model.weights), size=groups, p=model.weights)
    rank = model.spreads.shape[1]
    shared = np.sqrt(model.grouping)
    own = np.sqrt(1 - model.grouping)
    centre_z = rng.standard_normal((groups, rank), dtype=np.float32) * shared
    of_row = np.repeat(np.arange(groups), model.group_size)[:rows]
    z = centre_z[of_row] + own * rng.standard_normal((rows, rank), dtype=np.float32)
    c = cluster[of_row]
    x = np.empty((rows, model.dim), dtype=np.float32)
    for k in np.unique(c):
        mine = c == k
        x[mine] = model.means[k] + (z[mine] * model.spreads[k]) @ model.bases[k]
    centre_noise = rng.standard_normal((groups, model.dim), dtype=np.float32) * shared
    x += model.noise[c, None] * (
        centre_noise[of_row] + own * rng.standard_normal((rows, model.dim), dtype=np.float32)
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def generate(
    model: CatalogModel, n: int, seed: int = 0, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
    """n synthetic vectors, `chunk` rows at a time (each chunk seeded by (seed, its number))."""
    for number, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, number])
        yield _chunk(model, min(chunk, n - start), rng)
