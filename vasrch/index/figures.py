"""A run's search quality: calibrated probes and figures named for the queries they were
measured on. Plain data, light to import (the query path reads it from run manifests)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
