"""Run records as the train flow builds them, for tests of what reads manifests."""

from __future__ import annotations

from vasrch.features.backbones import BackboneSpec
from vasrch.index.figures import Figures
from vasrch.workspace.run_manifest import Calibration, Counts, Metrics, RunRecord, Timings


def run_record(**changes) -> RunRecord:
    """A run's record as the train flow builds it, with `changes`."""
    record = RunRecord(
        config={"clustering": {"n_components": None}, "search": {"centre": True}},
        backbone=BackboneSpec(),
        fingerprint="fp",
        suggested_k=3,
        suggest_rule="both",
        k=3,
        calibration=Calibration(probes=2, recall_at_10=0.96, calibrated_on="10 catalog photos"),
        metrics=Metrics(leave_one_out=Figures(queries=10, recall_at_10=0.97)),
        counts=Counts(
            catalog=10,
            indexed=10,
            products=10,
            rejected=0,
            extracted_new=10,
            reused=0,
            new=10,
            changed=0,
            unchanged=0,
            gone=0,
        ),
        timings=Timings(extract_s=1.23456, diagnostics_s=0.5, train_s=0.25, evaluate_s=0.125),
    )
    return record.model_copy(update=changes)
