"""A run's rejections (rejections.parquet): every photo of the catalog the run could not use,
with its manifest row, its reason and whether the next run tries it again; written into the run
folder (hashed with its other artifacts) and read back, verified, to show it."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from vasrch.atomic_files import atomic_path
from vasrch.layout import RunLayout
from vasrch.workspace.run_manifest import RunManifest
from vasrch.workspace.runs import read_artifact

COLUMNS = ["image_id", "row", "reason", "retry"]
SHOWN = 5  # rejections listed in a command's summary; the rest are in the run's file


def write_rejections(table: pd.DataFrame, path: Path) -> None:
    """The rejections (image_id, row, reason, retry) as Parquet, atomically."""
    with atomic_path(path) as tmp:
        table[COLUMNS].astype({"row": "Int64"}).to_parquet(tmp, index=False)


def run_rejections(run: RunLayout, manifest: RunManifest) -> pd.DataFrame:
    """A complete run's rejections, checked against its manifest (empty for runs written
    before runs kept them)."""
    if run.rejections.relative_to(run.root).as_posix() not in manifest.artifacts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_parquet(io.BytesIO(read_artifact(run.root, manifest, run.rejections)))


def rejection_line(row: dict[str, object]) -> str:
    """One rejection as a line: the photo, why, and whether the next run tries it again."""
    retry = "retried next run" if row["retry"] else "kept rejected"
    return f"{row['image_id']}: {row['reason']} ({retry})"


def first_rejections(table: pd.DataFrame, where: Path, shown: int = SHOWN) -> list[str]:
    """Lines listing the first `shown` rejections, then where all of them are."""
    lines = [rejection_line(row) for row in table.head(shown).to_dict("records")]
    if len(table) > shown:
        lines.append(f"... and {len(table) - shown} more: all {len(table)} in {where}")
    return lines
