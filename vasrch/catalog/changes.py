"""What changed between the photos a run indexes and the catalog as it is now.

A photo is the same when its image id and its bytes (sha256) are; a photo whose bytes changed
under the same id is `replaced` (its old vector leaves the index, its new one enters). Product
membership and metadata (title, price, url, any column) are compared photo by photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vasrch.catalog.products import metadata_columns


@dataclass(frozen=True)
class CatalogChanges:
    """Image ids added, removed, replaced (new bytes) and re-described (product or metadata
    changed, same bytes), and the products that appeared or left."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    replaced: tuple[str, ...]
    described: tuple[str, ...]
    products_added: tuple[str, ...]
    products_removed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """True when the catalog is what the run indexes, metadata included."""
        return not (self.added or self.removed or self.replaced or self.described)

    def counts(self) -> dict[str, int]:
        """How many of each, for manifests and logs."""
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "replaced": len(self.replaced),
            "changed": len(self.described),
            "products_added": len(self.products_added),
            "products_removed": len(self.products_removed),
        }


def _described(table: pd.DataFrame, ids: Sequence[str], columns: list[str]) -> pd.DataFrame:
    """product_id and `columns` of `ids`, as text ('' where a column is missing)."""
    rows = table.drop_duplicates("image_id").set_index("image_id").reindex(pd.Index(ids))
    out = pd.DataFrame(index=rows.index)
    for column in ["product_id", *columns]:
        values = rows[column] if column in rows.columns else pd.Series("", index=rows.index)
        out[column] = values.fillna("").astype(str)
    return out


def catalog_changes(
    indexed: pd.DataFrame, indexed_ids: Sequence[str], current: pd.DataFrame, ids: Sequence[str]
) -> CatalogChanges:
    """The changes from a run (its catalog table `indexed`, of which `indexed_ids` are in its
    index) to the catalog now (`current`, of which `ids` have vectors)."""
    before = indexed.drop_duplicates("image_id").set_index("image_id")["sha256"]
    before = before.reindex(pd.Index(indexed_ids, dtype=object))
    after = current.drop_duplicates("image_id").set_index("image_id")["sha256"]
    after = after.reindex(pd.Index(ids, dtype=object))
    both = before.index.intersection(after.index)
    replaced = both[before[both].to_numpy() != after[both].to_numpy()]
    same = both.difference(replaced)
    columns = sorted(set(metadata_columns(indexed)) | set(metadata_columns(current)))
    old = _described(indexed, list(same), columns)
    new = _described(current, list(same), columns)
    differs = (old.to_numpy() != new.to_numpy()).any(axis=1) if len(same) else np.zeros(0, bool)
    old_products = set(_described(indexed, list(before.index), [])["product_id"])
    new_products = set(_described(current, list(after.index), [])["product_id"])
    return CatalogChanges(
        added=tuple(sorted(after.index.difference(before.index))),
        removed=tuple(sorted(before.index.difference(after.index))),
        replaced=tuple(sorted(replaced)),
        described=tuple(sorted(same[differs])),
        products_added=tuple(sorted(new_products - old_products)),
        products_removed=tuple(sorted(old_products - new_products)),
    )
