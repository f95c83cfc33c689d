"""A run's search quality: calibrated probes and figures named for the queries they were
measured on. Plain data, light to import (the query path reads it from run manifests)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The kinds of queries a run is measured on: the prefix of their figures and their label.
QUERY_KINDS = {"leave_one_out": "leave-one-out", "held_out": "held-out"}
# How each figure reads to a person, by its name without the kind's prefix.
FIGURE_LABELS = {
    "probes": "probes",
    "queries": "queries",
    "recall_at_10": "recall@10",
    "precision_at_5": "precision@5",
    "precision_at_10": "precision@10",
    "exact_precision_at_10": "exact search's precision@10",
}
COUNTS = {"queries", "probes"}  # figures that count something: shown as whole numbers


def figure_label(name: str) -> str:
    """A flat figure name as a person reads it: `held_out_precision_at_10` is `precision@10
    (held-out)`, the calibration's `recall_at_10` is `recall@10 (calibration)`; names that are
    not a run's figures are returned as they are."""
    for prefix, kind in QUERY_KINDS.items():
        rest = name.removeprefix(f"{prefix}_")
        if rest != name and rest in FIGURE_LABELS:
            return f"{FIGURE_LABELS[rest]} ({kind})"
    if name == "recall_at_10":
        return "recall@10 (calibration)"
    return FIGURE_LABELS.get(name, name)


def figure_value(name: str, value: float) -> int | float:
    """The figure as shown: counts as whole numbers (a name with a kind's prefix too)."""
    bare = next((name.removeprefix(f"{p}_") for p in QUERY_KINDS if name.startswith(f"{p}_")), name)
    return int(value) if bare in COUNTS else value


@dataclass(frozen=True)
class Figures:
    """Search quality on one kind of query: how many queries, recall@10 against exact search
    and, with labels, precision@5 and @10 of the index and precision@10 of exact search."""

    queries: int
    recall_at_10: float
    precision_at_5: float | None = None
    precision_at_10: float | None = None
    exact_precision_at_10: float | None = None

    def named(self, kind: str) -> dict[str, float]:
        """The known figures, each named for its kind of query (`held_out_recall_at_10`)."""
        return {f"{kind}_{name}": v for name, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Evaluation:
    """A run's calibrated probes, the recall@10 they reached on what they were calibrated on,
    and its figures, named for the queries they were measured on."""

    probes: int
    recall_at_10: float
    calibrated_on: str
    leave_one_out: Figures
    held_out: Figures | None = None

    def figures(self) -> dict[str, float]:
        """Every figure by its flat name, as tables show them: probes, recall_at_10 (the
        calibration's), leave_one_out_* and held_out_*."""
        out: dict[str, float] = {"probes": self.probes, "recall_at_10": self.recall_at_10}
        out |= self.leave_one_out.named("leave_one_out")
        if self.held_out is not None:
            out |= self.held_out.named("held_out")
        return out


@dataclass(frozen=True)
class Drift:
    """How far a refreshed index has moved from the run whose clusters were trained."""

    added_since_training: int  # photos added by refreshes since the trained run
    added_share: float  # of the photos indexed now
    size_spread: float  # coefficient of variation of cluster sizes now
    trained_size_spread: float  # the same at training
    recall_at_10: float  # re-checked on sampled catalog photos at the run's probes
    target_recall: float
    reasons: tuple[str, ...]  # the thresholds passed; empty while the index is fine

    @property
    def retrain_due(self) -> bool:
        return bool(self.reasons)
