"""Products: which product each catalog photo shows, the products' metadata, and filters on it.

A catalog table (see catalog.scan) carries `product_id` and the metadata columns of a manifest
beside each photo; in folder mode each image is its own product and its class folder its
`category`. Results name products: a product's score is its best photo's score.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

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


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    row)."""

    product_of: pd.Series  # image_id -> product_id
    metadata: pd.DataFrame  # indexed by product_id: the metadata columns

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame) -> Products:
        """From a catalog table; one without product columns (older runs) is read as folders."""
        if "product_id" not in catalog.columns:
            catalog = catalog.join(folder_products(catalog["image_id"]), on="image_id")
        columns = metadata_columns(catalog)
        product_of = pd.Series(
            catalog["product_id"].astype(str).to_numpy(), index=catalog["image_id"].to_numpy()
        )
        first = catalog.drop_duplicates("product_id").set_index("product_id")[columns]
        # Text columns read '' where empty; number columns stay numbers, None where missing.
        missing = {c: None if _numeric(first[c]) else "" for c in columns}
        metadata = first.astype(object).where(first.notna(), None)
        metadata = metadata.fillna({c: v for c, v in missing.items() if v is not None})
        return cls(product_of, metadata)

    @property
    def columns(self) -> list[str]:
        """Columns a filter may name: product_id and the metadata columns."""
        return ["product_id", *self.metadata.columns]

    @cached_property
    def several_photos(self) -> bool:
        """Whether any product has more than one photo (otherwise photos are products)."""
        return bool(self.product_of.duplicated().any())

    def of(self, image_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Product id of each image id (object array)."""
        return self.product_of.reindex(np.asarray(image_ids, dtype=object)).to_numpy(object)

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

    def matching(self, filters: FilterSpec | None) -> pd.Index:
        """Product ids that pass every filter (a product passes a filter when its value is one
        of the filter's values)."""
        keep = pd.Series(True, index=self.metadata.index)
        for column, values in self.check_filters(filters).items():
            column_values = keep.index if column == "product_id" else self.metadata[column]
            keep &= pd.Series(column_values, index=keep.index).astype(str).isin(values)
        return keep.index[keep.to_numpy()]

    def allowed(
        self, image_ids: Sequence[str] | np.ndarray, filters: FilterSpec | None
    ) -> np.ndarray | None:
        """Boolean mask over `image_ids`: the photos whose product passes the filters (None
        without filters)."""
        if not filters:
            return None
        return pd.Index(self.of(image_ids)).isin(self.matching(filters))

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The product of each photo and each metadata column, as object arrays."""
        columns = {c: self.metadata[c].to_numpy(object) for c in self.metadata.columns}
        return self.product_of.to_numpy(object), columns

    def columns_of(self, image_ids: Sequence[str] | np.ndarray) -> dict[str, np.ndarray]:
        """product_id and each metadata column of the product of each image id, in order, as
        object arrays ('' where unknown); hash lookups only, cheap for one query's answers."""
        products, columns = self._arrays
        at = self.product_of.index.get_indexer(np.asarray(image_ids, dtype=object))
        product_ids = np.where(at >= 0, products[at], "")
        where = self.metadata.index.get_indexer(product_ids)
        out = {"product_id": product_ids}
        for name, values in columns.items():
            out[name] = np.where(where >= 0, values[where], self._missing[name])
        return out

    @cached_property
    def _missing(self) -> dict[str, str | None]:
        """Each metadata column's value for an unknown photo: '' for text, None for numbers."""
        return {
            c: None if all(v is None or _is_number(v) for v in values) else ""
            for c, values in self._arrays[1].items()
        }

    def describe(self, image_ids: Sequence[str] | np.ndarray) -> pd.DataFrame:
        """product_id and the metadata of the product of each image id, in order."""
        return pd.DataFrame(self.columns_of(image_ids))
