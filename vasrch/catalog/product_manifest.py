"""Catalog manifests: a CSV or Parquet table of products and their photos.

Required columns are `product_id` and `image` (a path relative to the catalog folder, or
absolute when `catalog.allow_absolute_paths` is set); every other column is the product's
metadata (category, title, url, ...). A product may have many rows, one per photo. A row that
cannot be used becomes a rejection with its reason (an empty field, a path leaving the catalog
folder, a repeated row, a photo already listed for another product); a manifest that cannot be
read, lacks a required column or uses a reserved column name is an error (ManifestError).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vasrch.errors import DataError

REQUIRED_COLUMNS = ("product_id", "image")
# Names the scan, the run's catalog table and the result tables already use.
RESERVED_COLUMNS = frozenset(
    {
        "image_id",
        "path",
        "sha256",
        "bytes",
        "mtime_ns",
        "ctime_ns",
        "inode",
        "device",
        "status",
        "query",
        "rank",
        "score",
        "neighbour_id",
        "neighbour_product_id",
        "neighbour_image_id",
    }
)


class ManifestError(DataError):
    """A manifest that cannot be used as a whole (unreadable, missing or reserved columns)."""


@dataclass(frozen=True)
class Manifest:
    """The usable rows (image_id, path, product_id and metadata columns), one per photo, and
    the rows rejected (image_id, path, reason)."""

    rows: pd.DataFrame
    rejected: pd.DataFrame
    metadata: list[str]


def read_table(path: Path) -> pd.DataFrame:
    """The manifest file as a table of strings ('' for missing values); CSV or Parquet."""
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
            frame = table.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
            return frame.to_pandas().fillna("")
        # header=None: pandas would rename a repeated header (title, title.1) and hide it
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", header=None)
        frame = raw.iloc[1:].reset_index(drop=True)
        frame.columns = list(raw.iloc[0])
        return frame
    except FileNotFoundError:
        raise ManifestError(f"{path}: catalog manifest not found") from None
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as err:
        raise ManifestError(f"{path}: cannot read the catalog manifest: {err}") from None


def _check_columns(path: Path, columns: list[str]) -> list[str]:
    """The metadata columns, after checking the required ones are there and none is reserved."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{path}: missing required column(s) {missing}; a manifest needs product_id and "
            f"image (columns found: {columns})"
        )
    reserved = sorted(RESERVED_COLUMNS.intersection(columns))
    if reserved:
        raise ManifestError(
            f"{path}: column(s) {reserved} are reserved by vasrch's own tables; rename them"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ManifestError(f"{path}: column(s) {duplicated} appear more than once")
    return [c for c in columns if c not in REQUIRED_COLUMNS]


def _locate(image: str, root: Path, allow_absolute: bool) -> tuple[str, str] | str:
    """(image_id, path) of a manifest's image entry, or why it cannot be used."""
    if not image.strip():
        return "empty image"
    if "\x00" in image:
        return "image path holds a NUL byte"
    if os.path.isabs(image):
        if not allow_absolute:
            return (
                "absolute path: give it relative to catalog.path, or set "
                "catalog.allow_absolute_paths: true"
            )
        return image, os.path.normpath(image)
    normal = posixpath.normpath(image.replace(os.sep, "/"))
    if normal == ".." or normal.startswith("../"):
        return "path leaves the catalog folder (..); give a path inside catalog.path"
    return normal, os.path.join(root, normal)


def load_manifest(path: Path, root: Path, allow_absolute: bool = False) -> Manifest:
    """The manifest's usable rows and its rejected rows (see the module docstring)."""
    table = read_table(path)
    metadata = _check_columns(path, list(table.columns))
    rows, rejected = [], []
    owner: dict[str, str] = {}
    for line, entry in enumerate(table.to_dict("records"), start=2):
        product, image = str(entry["product_id"]).strip(), str(entry["image"])
        where = _locate(image, root, allow_absolute)
        label = f"{path.name} row {line}"
        if isinstance(where, str):
            rejected.append((image, image, f"{label}: {where}"))
            continue
        image_id, file_path = where
        if not product:
            rejected.append((image_id, file_path, f"{label}: empty product_id"))
            continue
        if image_id in owner:
            earlier = owner[image_id]
            why = (
                "repeats an earlier row"
                if earlier == product
                else f"photo already listed for product {earlier!r}; a photo belongs to one product"
            )
            rejected.append((image_id, file_path, f"{label}: {why}"))
            continue
        owner[image_id] = product
        rows.append((image_id, file_path, product, *(str(entry[c]) for c in metadata)))
    frame = pd.DataFrame(rows, columns=["image_id", "path", "product_id", *metadata])
    return Manifest(frame, pd.DataFrame(rejected, columns=["image_id", "path", "reason"]), metadata)
