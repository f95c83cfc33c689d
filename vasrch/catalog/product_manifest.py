"""Catalog manifests: a CSV or Parquet table of products and their photos.

Required columns are `product_id` and `image` (a path relative to the catalog folder or store
prefix, a URL (https://, s3://, ...: the URL is the photo's image id), or absolute when
`catalog.allow_absolute_paths` is set); every other column is the product's
metadata (category, title, url, ...). A product may have many rows, one per photo. A row that
cannot be used becomes a rejection with its reason (an empty field, a path leaving the catalog
folder, a repeated row, a photo already listed for another product); a manifest that cannot be
read, lacks a required column or uses a reserved column name is an error (ManifestError).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vasrch.addresses import is_url
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
# A CSV cell read as a number: plain decimal notation only (no leading zero, sign, exponent).
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


class ManifestError(DataError):
    """A manifest that cannot be used as a whole (unreadable, missing or reserved columns)."""


@dataclass(frozen=True)
class Manifest:
    """The usable rows (image_id, path, product_id and metadata columns), one per photo, the
    rows rejected (image_id, path, row, reason), and the manifest row of each usable photo
    (image_id -> row number as a spreadsheet shows it: the header is row 1)."""

    rows: pd.DataFrame
    rejected: pd.DataFrame
    metadata: list[str]
    row_of: dict[str, int] = field(default_factory=dict)


def read_table(path: Path) -> pd.DataFrame:
    """The manifest file as a table, CSV or Parquet: text ('' for missing values), and numbers
    where the manifest holds them (see the module docstring; null for missing values)."""
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
            kept = [
                t if n not in REQUIRED_COLUMNS and _is_number_type(t) else pa.string()
                for n, t in zip(table.column_names, table.schema.types, strict=True)
            ]
            frame = table.cast(pa.schema(list(zip(table.column_names, kept, strict=True))))
            frame = frame.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
            text = [n for n, t in zip(frame.columns, kept, strict=True) if t == pa.string()]
            return frame.fillna(dict.fromkeys(text, ""))
        # header=None: pandas would rename a repeated header (title, title.1) and hide it
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", header=None)
        frame = raw.iloc[1:].reset_index(drop=True)
        frame.columns = list(raw.iloc[0])
        return _numbers(frame)
    except FileNotFoundError:
        raise ManifestError(f"{path}: catalog manifest not found") from None
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as err:
        raise ManifestError(f"{path}: cannot read the catalog manifest: {err}") from None


def _is_number_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV's text table with each metadata column of plain decimal numbers read as numbers:
    integers (nullable) when none has a decimal point, else floats; empty cells null."""
    for position, name in enumerate(frame.columns):
        if name in REQUIRED_COLUMNS:
            continue
        column = frame.iloc[:, position]
        given = column[column.str.strip() != ""].str.strip()
        if given.empty or not all(_NUMBER.fullmatch(v) for v in given):
            continue
        kind = "float64" if given.str.contains(".", regex=False).any() else "Int64"
        frame.isetitem(position, pd.to_numeric(column.str.strip().replace("", None)).astype(kind))
    return frame


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


def _locate(image: str, root: str | Path, allow_absolute: bool) -> tuple[str, str] | str:
    """(image_id, path) of a manifest's image entry, or why it cannot be used."""
    if not image.strip():
        return "empty image"
    if "\x00" in image:
        return "image path holds a NUL byte"
    if is_url(image.strip()):
        return image.strip(), image.strip()
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
    if is_url(str(root)):
        return normal, f"{str(root).rstrip('/')}/{normal}"
    return normal, os.path.join(root, normal)


def load_manifest(path: Path, root: str | Path, allow_absolute: bool = False) -> Manifest:
    """The manifest's usable rows and its rejected rows (see the module docstring)."""
    table = read_table(path)
    metadata = _check_columns(path, list(table.columns))
    rows, rejected = [], []
    owner: dict[str, str] = {}
    row_of: dict[str, int] = {}
    for line, entry in enumerate(table.to_dict("records"), start=2):
        product, image = str(entry["product_id"]).strip(), str(entry["image"])
        where = _locate(image, root, allow_absolute)
        label = f"{path.name} row {line}"
        if isinstance(where, str):
            rejected.append((image, image, line, f"{label}: {where}"))
            continue
        image_id, file_path = where
        if not product:
            rejected.append((image_id, file_path, line, f"{label}: empty product_id"))
            continue
        if image_id in owner:
            earlier = owner[image_id]
            why = (
                "repeats an earlier row"
                if earlier == product
                else f"photo already listed for product {earlier!r}; a photo belongs to one product"
            )
            rejected.append((image_id, file_path, line, f"{label}: {why}"))
            continue
        owner[image_id] = product
        row_of[image_id] = line
        rows.append((image_id, file_path, product, *(entry[c] for c in metadata)))
    frame = pd.DataFrame(rows, columns=["image_id", "path", "product_id", *metadata])
    frame = frame.astype({c: table[c].dtype for c in metadata})
    rejections = pd.DataFrame(rejected, columns=["image_id", "path", "row", "reason"])
    return Manifest(frame, rejections, metadata, row_of)
