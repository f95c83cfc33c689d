"""Products: which product each catalog photo shows, the products' metadata, and filters on it.

A catalog table (see catalog.scan) carries `product_id` and the metadata columns of a manifest
beside each photo; in folder mode each image is its own product and its class folder its
`category`. Results name products: a product's score is its best photo's score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vasrch.catalog.ids import Ids
from vasrch.catalog.product_manifest import RESERVED_COLUMNS
from vasrch.errors import UsageError

FilterSpec = Mapping[str, str | Sequence[str]]


def folder_products(image_ids: pd.Series) -> pd.DataFrame:
    """Folder mode: each image its own product, its parent folder ('' at the top) its category;
    indexed by image_id."""
    ids = pd.Series(image_ids, dtype=object)
    parts = ids.str.rsplit("/", n=1)
    category = parts.map(lambda p: p[0].rsplit("/", 1)[-1] if len(p) == 2 else "")
    return pd.DataFrame(
        {"product_id": ids.to_numpy(), "category": category.to_numpy()},
        index=pd.Index(ids.to_numpy(), name="image_id"),
    )


def _numeric(column: pd.Series) -> bool:
    """Whether a metadata column holds numbers (a manifest's prices, stock counts...)."""
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def metadata_columns(catalog: pd.DataFrame) -> list[str]:
    """The product metadata columns of a catalog table (everything beyond vasrch's own)."""
    return [c for c in catalog.columns if c not in RESERVED_COLUMNS and c != "product_id"]


def product_caption(row: Mapping[str, object]) -> str:
    """A result's caption: its product id, and its title when the catalog has one."""
    title = row.get("title") or ""
    return f"{row['product_id']} · {title}" if title else str(row["product_id"])


def web_link(url: object) -> str:
    """A product `url` a page may link: http(s) only ('' for anything else, such as a
    `javascript:` URL planted in a manifest)."""
    text = str(url or "").strip()
    return text if urlsplit(text).scheme.lower() in ("http", "https") else ""


def parse_filters(items: Iterable[str]) -> dict[str, list[str]]:
    """`key=value` or `key=v1,v2` (any of the values) strings, as a filters mapping; a key given
    twice gathers its values."""
    filters: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values:
            raise UsageError(f"filter {item!r}: write it as column=value or column=v1,v2")
        filters.setdefault(key.strip(), []).extend(v for v in values.split(",") if v)
    return filters


@dataclass(frozen=True, eq=False)
class Products:
    """The product of each catalog photo and each product's metadata (from its first photo's
    row), held compactly: image and product ids as Ids (Arrow strings), each photo's product
    as an int32 row, text metadata as Arrow strings and numbers as numbers; no Python object
    a photo or a product."""

    image_ids: Ids  # each catalog photo
    product_rows: np.ndarray  # int32: each photo's product, a row of product_ids and metadata
    product_ids: Ids  # each product once
    metadata: pd.DataFrame  # a row per product (as product_ids): the metadata columns

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame) -> Products:
        """From a catalog table; one without product columns (older runs) is read as folders."""
        if "product_id" not in catalog.columns:
            catalog = catalog.join(folder_products(catalog["image_id"]), on="image_id")
        columns = metadata_columns(catalog)
        codes, uniques = pd.factorize(catalog["product_id"].astype(str).to_numpy(object))
        first = np.unique(codes, return_index=True)[1]
        rows = catalog.iloc[first]
        # Text columns read '' where empty; number columns stay numbers, missing where missing.
        metadata = pd.DataFrame(
            {c: _compact(rows[c]) for c in columns}, index=pd.RangeIndex(len(first))
        )
        return cls(
            Ids.of(catalog["image_id"].astype(str).to_numpy(object)),
            codes.astype(np.int32),
            Ids.of(uniques),
            metadata,
        )

    @property
    def columns(self) -> list[str]:
        """Columns a filter may name: product_id and the metadata columns."""
        return ["product_id", *self.metadata.columns]

    @property
    def several_photos(self) -> bool:
        """Whether any product has more than one photo (otherwise photos are products)."""
        return len(self.product_ids) < len(self.image_ids)

    def rows(self, image_ids: Ids | Sequence[str] | np.ndarray) -> np.ndarray:
        """The product row of each image id (-1 for one not in the catalog)."""
        at = self.image_ids.positions(image_ids)
        return np.where(at >= 0, self.product_rows[np.maximum(at, 0)], -1)

    def ids_of(self, image_ids: Ids | Sequence[str] | np.ndarray) -> Ids:
        """Product id of each image id, as Ids (null for one not in the catalog)."""
        rows = self.rows(image_ids)
        return Ids(self.product_ids.values.take(pa.array(rows, mask=rows < 0)))

    def of(self, image_ids: Ids | Sequence[str] | np.ndarray) -> np.ndarray:
        """Product id of each image id (object array; None for one not in the catalog)."""
        return np.asarray(self.ids_of(image_ids))

    def check_filters(self, filters: FilterSpec | None) -> dict[str, list[str]]:
        """Filters as {column: [values]}, refusing unknown columns and empty value lists."""
        if not filters:
            return {}
        if not isinstance(filters, Mapping):
            raise UsageError(
                f'filters must map a column to a value or a list of values, e.g. {{"category": '
                f'["shoes"]}}; got {type(filters).__name__}'
            )
        checked: dict[str, list[str]] = {}
        for column, wanted in filters.items():
            if column not in self.columns:
                raise UsageError(
                    f"unknown filter column {column!r}; the catalog's columns are "
                    f"{', '.join(self.columns)}"
                )
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            if not values or not all(isinstance(v, str) for v in values):
                raise UsageError(
                    f"filter {column!r}: give a value or a non-empty list of text values, got "
                    f"{wanted!r}"
                )
            checked[column] = values
        return checked

    def passing(self, filters: FilterSpec | None) -> np.ndarray:
        """Mask over the product rows: the products that pass every filter (a product passes
        a filter when its value, as text, is one of the filter's values)."""
        keep = np.ones(len(self.product_ids), dtype=bool)
        for column, values in self.check_filters(filters).items():
            if column == "product_id":
                text = self.product_ids.values
            elif isinstance(self.metadata[column].dtype, pd.ArrowDtype):
                text = pa.array(self.metadata[column].array)
            else:
                numbers = self.metadata[column].to_numpy(object)
                text = pa.array([str(v) for v in numbers.tolist()], pa.string())
            keep &= np.asarray(pc.is_in(text, value_set=pa.array(values, pa.string())))
        return keep

    def matching(self, filters: FilterSpec | None) -> pd.Index:
        """Product ids that pass every filter."""
        return pd.Index(np.asarray(self.product_ids.take(self.passing(filters))))

    def allowed(
        self, image_ids: Ids | Sequence[str] | np.ndarray, filters: FilterSpec | None
    ) -> np.ndarray | None:
        """Boolean mask over `image_ids`: the photos whose product passes the filters (None
        without filters)."""
        if not filters:
            return None
        rows = self.rows(image_ids)
        return (rows >= 0) & self.passing(filters)[np.maximum(rows, 0)]

    def columns_of(self, image_ids: Ids | Sequence[str] | np.ndarray) -> dict[str, np.ndarray]:
        """product_id and each metadata column of the product of each image id, in order, as
        object arrays ('' where unknown, and None for a number); cheap for one query's
        answers."""
        rows = self.rows(image_ids)
        known = rows >= 0
        product_ids = np.asarray(self.product_ids.take(np.maximum(rows, 0)))
        product_ids[~known] = ""
        out = {"product_id": product_ids}
        for name in self.metadata.columns:
            column = self.metadata[name]
            values = column.iloc[np.maximum(rows, 0)].to_numpy(dtype=object, copy=True)
            values[pd.isna(values)] = None
            values[~known] = None if _numeric(column) else ""
            out[name] = values
        return out

    def describe(self, image_ids: Ids | Sequence[str] | np.ndarray) -> pd.DataFrame:
        """product_id and the metadata of the product of each image id, in order."""
        return pd.DataFrame(self.columns_of(image_ids))


def _compact(column: pd.Series) -> pd.Series | np.ndarray:
    """A metadata column as held: numbers as they are, text as Arrow strings ('' where
    missing)."""
    if _numeric(column):
        return column.to_numpy() if column.dtype.kind in "fiu" else column.array
    text = [v if isinstance(v, str) else ("" if pd.isna(v) else str(v)) for v in column]
    return pd.array(text, dtype=pd.ArrowDtype(pa.string()))
