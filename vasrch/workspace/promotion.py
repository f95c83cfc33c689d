"""Nightly rules: which run may replace LATEST (quality gates) and what it may start from."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vasrch.config import ClusteringConfig, GatesConfig
from vasrch.layout import WorkspaceLayout
from vasrch.workspace.run_manifest import RunManifest, RunRecord
from vasrch.workspace.runs import RunError, latest_run_id, read_artifact, read_manifest


def gate_failure(gates: GatesConfig, record: RunRecord) -> str | None:
    """None when the run passes `gates`, else the reason, naming each failing figure (held-out
    or leave-one-out, as `gates.figures` says) and its threshold."""
    kind = record.metrics.headline_kind if gates.figures == "auto" else gates.figures
    figures = record.metrics.of_kind(kind)
    failures = []
    if figures is None:
        failures.append(
            "nightly.gates.figures is held_out but the run has no held-out figures "
            "(set evaluation.queries)"
        )
    else:
        for name, threshold in (
            ("recall_at_10", gates.min_recall_at_10),
            ("precision_at_10", gates.min_precision_at_10),
        ):
            if threshold is None:
                continue
            value = getattr(figures, name)
            if value is None:
                failures.append(f"{kind}_{name} is unknown (no labels), gated at {threshold}")
            elif value < threshold:
                failures.append(
                    f"{kind}_{name} {value:.4f} is below nightly.gates.min_{name} {threshold}"
                )
    counts = record.counts
    fraction = counts.rejected / counts.catalog if counts.catalog else 0.0
    if fraction > gates.max_rejected_fraction:
        failures.append(
            f"rejected fraction {fraction:.4f} ({counts.rejected} of {counts.catalog} "
            f"images) is above nightly.gates.max_rejected_fraction {gates.max_rejected_fraction}"
        )
    return "; ".join(failures) or None


@dataclass(frozen=True)
class WarmStart:
    """The LATEST run (None before the first), its verified centroids when they fit the new run,
    and why none are used when LATEST could not be read (damaged or tampered)."""

    previous_run: str | None
    centroids: np.ndarray | None
    problem: str | None = None

    def applied(self, k: int) -> bool:
        """Whether KMeans really started from these centroids (same k; the space is the same)."""
        return self.centroids is not None and self.centroids.shape[0] == k


def _same_space(
    manifest: RunManifest, fingerprint: str, clustering: ClusteringConfig, centre: bool
) -> bool:
    return (
        manifest.fingerprint == fingerprint
        and manifest.setting("clustering", "n_components") == clustering.n_components
        and bool(manifest.setting("search", "centre")) == centre
    )


def warm_start(
    workspace: Path, fingerprint: str, clustering: ClusteringConfig, centre: bool
) -> WarmStart:
    """LATEST's centroids when they can warm-start this config's KMeans: same backbone, same
    PCA and centring settings, and the same k unless k is `auto` (the suggestion is only known
    during training; centroids of another k are then ignored by KMeans with a warning). The
    centroids are read once and checked against LATEST's manifest; a damaged or tampered LATEST,
    or one whose refresh found the clusters drifted past the config's thresholds, gives a cold
    start with the reason in `problem`."""
    latest = latest_run_id(workspace)
    if latest is None:
        return WarmStart(None, None)
    run = WorkspaceLayout(Path(workspace)).run(latest)
    try:
        manifest = read_manifest(run.root, verify=False)
        if manifest.refresh is not None and manifest.refresh.drift.retrain_due:
            reasons = "; ".join(manifest.refresh.drift.reasons)
            return WarmStart(latest, None, f"refresh {latest} found a retrain due: {reasons}")
        k = clustering.num_clusters
        if not _same_space(manifest, fingerprint, clustering, centre) or (
            k != "auto" and k != manifest.k
        ):
            return WarmStart(latest, None)
        data = read_artifact(run.root, manifest, run.index.centroids)
        return WarmStart(latest, np.load(io.BytesIO(data), allow_pickle=False))
    except (RunError, ValueError) as err:
        return WarmStart(latest, None, str(err))
