"""The run manifest (manifest.json): what a run records about itself, as one typed model.

A run's record (`RunRecord`: config, backbone, k, calibration, metrics, counts, timings, bulk,
status) is built by the train flow; `complete_run` adds its id, lineage and the sha256 of every
artifact, giving the `RunManifest` that is written once and read back, validated, by everything
that opens a run. Integers stay integers in the JSON. Manifests written before this model (flat
metrics with float probes and query counts, probes and calibrated_on at the top, completed and
versions at the top) still load: `RunManifest` moves their fields into today's layout.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vasrch.catalog.scan import STATUSES
from vasrch.features.backbones import BackboneSpec
from vasrch.index.compression import VectorStorage
from vasrch.index.figures import Drift, Evaluation, Figures

if TYPE_CHECKING:
    from vasrch.features.extraction import ExtractSummary


class _Part(BaseModel):
    # NaN figures (a recall with no answer to compare) are written as NaN, as json.dumps does
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class Counts(_Part):
    """Images of the run: found, indexed, rejected, extracted and reused, and how many scanned
    images are new, changed, unchanged or gone since the previous run."""

    catalog: int = Field(description="Every image file found, scanned or not.")
    indexed: int = Field(description="Images in the index.")
    products: int = Field(description="Products among the images still present.")
    rejected: int = Field(description="Images that could not be used, each with its reason.")
    extracted_new: int = Field(description="Images embedded by this run.")
    reused: int = Field(description="Images whose features came from the cache.")
    new: int
    changed: int
    unchanged: int
    gone: int

    @classmethod
    def of(cls, table: pd.DataFrame, *, indexed: int, extract: ExtractSummary) -> Counts:
        """The counts of a run whose catalog, diffed against the previous run's, is `table`."""
        present = table[table["status"] != "gone"]
        products = present["product_id"].nunique() if "product_id" in table else len(present)
        return cls(
            catalog=extract.seen,
            indexed=indexed,
            products=int(products),
            rejected=extract.rejected,
            extracted_new=extract.new,
            reused=extract.reused,
            **{status: int((table["status"] == status).sum()) for status in STATUSES},
        )


class Timings(_Part):
    """Seconds each stage of the run took, to the millisecond (bulk_s: None without bulk)."""

    extract_s: float
    diagnostics_s: float
    train_s: float
    evaluate_s: float
    bulk_s: float | None = None

    @field_validator("*")
    @classmethod
    def _to_the_millisecond(cls, seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds, 3)


class Calibration(_Part):
    """The probes queries of this run use by default, the recall@10 they reached against exact
    search, and the photos they were calibrated on."""

    probes: int = Field(ge=1)
    recall_at_10: float
    calibrated_on: str


class Metrics(_Part):
    """Search quality by kind of query: leave-one-out (catalog photos, each left out of its
    own answers) and held-out (photos not in the catalog; None without evaluation.queries)."""

    leave_one_out: Figures
    held_out: Figures | None = None

    def of_kind(self, kind: Literal["held_out", "leave_one_out"]) -> Figures | None:
        """The figures measured on that kind of query."""
        return self.held_out if kind == "held_out" else self.leave_one_out

    @property
    def headline_kind(self) -> Literal["held_out", "leave_one_out"]:
        """held_out when the run has held-out figures (what a shop meets), else leave_one_out."""
        return "held_out" if self.held_out is not None else "leave_one_out"


class BulkSummary(_Part):
    """What a bulk job wrote: neighbour rows and near-duplicate groups, and its settings."""

    neighbour_rows: int
    duplicate_groups: int
    duplicate_images: int
    top_n: int
    probes: int
    threshold: float


class Lineage(_Part):
    """Where a run comes from: the run LATEST named when it started (None for the first, or
    when LATEST was unreadable), when it was completed, and the packages that built it."""

    parent_run: str | None
    created: dt.datetime
    versions: dict[str, str]


class Refresh(_Part):
    """What a refresh changed: the run whose clusters it kept (trained_run), and how many photos
    were added, removed, replaced (new bytes) and re-described (product or metadata), with the
    drift it measured."""

    trained_run: str
    added: int
    removed: int
    replaced: int
    changed: int
    products_added: int
    products_removed: int
    drift: Drift


class RunRecord(_Part):
    """What a run records about itself before its artifacts are hashed."""

    status: Literal["complete", "rejected"] = "complete"
    reason: str | None = Field(None, description="Why a rejected run was not promoted.")
    config: dict[str, Any] = Field(description="The resolved config, as JSON.")
    backbone: BackboneSpec
    fingerprint: str
    suggested_k: int
    suggest_rule: str
    sweep_note: str | None = Field(None, description="Set when k sits at the sweep's edge.")
    k: int
    k_reason: str | None = Field(
        None,
        description="Why k is what it is (num_clusters, or the sweep's suggestion scaled to "
        "the catalog and capped); None for runs made before it was recorded.",
    )
    calibration: Calibration
    metrics: Metrics
    counts: Counts
    timings: Timings
    bulk: BulkSummary | None = None
    refresh: Refresh | None = Field(
        None, description="Set on a run made by a refresh (its clusters are trained_run's)."
    )
    vectors: VectorStorage | None = Field(
        None,
        description="How the index holds its vectors in memory and why (search."
        "max_bytes_per_photo); None for runs made before it was recorded: full float32.",
    )

    @property
    def promoted(self) -> bool:
        """Whether the run passed its gates (a rejected run is recorded, never LATEST)."""
        return self.status == "complete"

    @property
    def evaluation(self) -> Evaluation:
        """The calibration and metrics as the training stage gave them."""
        return Evaluation(
            probes=self.calibration.probes,
            recall_at_10=self.calibration.recall_at_10,
            calibrated_on=self.calibration.calibrated_on,
            leave_one_out=self.metrics.leave_one_out,
            held_out=self.metrics.held_out,
        )

    def rejected(self, reason: str) -> RunRecord:
        """This record, for a run recorded but not promoted, with the reason."""
        return self.model_copy(update={"status": "rejected", "reason": reason})

    def setting(self, section: str, name: str) -> Any:
        """A field of the run's recorded config (None when it lacks it)."""
        return self.config.get(section, {}).get(name)


class RunManifest(RunRecord):
    """manifest.json of a complete run: its record, id, lineage and artifact hashes."""

    run_id: str
    lineage: Lineage
    artifacts: dict[str, str] = Field(description="Every artifact's path -> sha256.")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Move the fields of a manifest written before this model into today's layout."""
        if not isinstance(data, dict) or "lineage" in data:
            return data
        old = dict(data)
        metrics = old.pop("metrics", None) or {}
        old["calibration"] = {
            "probes": old.pop("probes", metrics.get("probes")),
            "recall_at_10": metrics.get("recall_at_10"),
            "calibrated_on": old.pop("calibrated_on", None),
        }
        old["metrics"] = {
            kind: _flat_figures(metrics, kind)
            for kind in ("leave_one_out", "held_out")
            if f"{kind}_queries" in metrics
        }
        old["lineage"] = {
            "parent_run": None,
            "created": old.pop("completed", None),
            "versions": old.pop("versions", None),
        }
        return old


def _flat_figures(metrics: dict[str, Any], kind: str) -> dict[str, Any]:
    """One kind's figures from the flat metrics of an older manifest (`held_out_recall_at_10`)."""
    prefix = f"{kind}_"
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
