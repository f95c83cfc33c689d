"""Memory of the catalog tables a loaded run (Searcher) holds beside its index, per photo.

    python benchmarks/bench_searcher_tables.py [--n 500000]

A synthetic catalog (image_id, path, sha256, product_id of 2 photos each, category, title) is
read as open_run reads a run's catalog.parquet; each table the searcher keeps is built from it
(with the lookup the first search builds) and sized: `Ids` by nbytes (Arrow strings and
offsets, sorted hashes and rows), pandas objects by `memory_usage(deep=True)` (values, index
and every Python string; their hash tables for lookups are not counted, so pandas figures are
lower bounds). RSS is not used: the catalog read and dropped leaves the allocator's high-water
mark behind, larger than any of the tables.

Products are sized as held now (Ids of image and product ids, an int32 product row a photo,
metadata as Arrow strings) and as they were held before (an image_id -> product_id pandas
Series and a metadata frame of Python objects, rebuilt here the old way), per photo and per
product.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pandas as pd


def catalog(n: int) -> pd.DataFrame:
    """n photos of n / 2 products in 10 categories, as pandas reads them from parquet."""
    rows = np.arange(n)
    ids = [f"shirts/photo_{i:09d}.jpg" for i in rows]
    return pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"/srv/catalog/photos/{i}" for i in ids],
            "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in rows],
            "product_id": [f"P{i // 2:08d}" for i in rows],
            "category": [f"category-{i % 10}" for i in rows],
            "title": [f"A cotton shirt, style {i // 2}" for i in rows],
        }
    )


def pandas_products(table: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Products as held before: the image -> product Series and the metadata frame of Python
    objects indexed by product id."""
    product_of = pd.Series(
        table["product_id"].astype(str).to_numpy(), index=table["image_id"].to_numpy()
    )
    first = table.drop_duplicates("product_id").set_index("product_id")[["category", "title"]]
    return product_of, first.astype(object)


def products_bytes(products) -> int:
    """What Products holds now: its Ids (with their lookups built), product rows, metadata."""
    products.rows(products.image_ids[:1])
    products.product_ids.positions([products.product_ids[0]])
    held = products.image_ids.nbytes + products.product_ids.nbytes + products.product_rows.nbytes
    return held + int(products.metadata.memory_usage(deep=True, index=True).sum())


def main() -> int:
    from vasrch.catalog.ids import Ids
    from vasrch.catalog.products import Products

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=500_000)
    n = p.parse_args().n
    table = catalog(n)

    def ids_bytes(column: str) -> int:
        ids = Ids.of(table[column].to_numpy())
        ids.positions([table[column].iloc[0]])
        return ids.nbytes

    products = Products.from_catalog(table)
    product_of, metadata = pandas_products(table)
    before = int(product_of.memory_usage(deep=True, index=True)) + int(
        metadata.memory_usage(deep=True, index=True).sum()
    )
    sizes = {
        "paths as Ids (held now)": ids_bytes("path"),
        "paths as a pandas Series (held before)": int(
            table.set_index("image_id")["path"].memory_usage(deep=True, index=True)
        ),
        "sha256 digests as Ids": ids_bytes("sha256"),
        "image ids as Ids": ids_bytes("image_id"),
        "Products: ids, rows and Arrow metadata": products_bytes(products),
        "Products as pandas objects (held before)": before,
    }
    for name, size in sizes.items():
        print(f"{name:42s} {size / n:7.1f} bytes a photo")
    held = sum(v for k, v in sizes.items() if "before" not in k) / n
    print(f"{'catalog tables held now, total':42s} {held:7.1f} bytes a photo (n = {n:,})")
    count = len(products.product_ids)
    now = sizes["Products: ids, rows and Arrow metadata"]
    print(
        f"Products, per product ({count:,} products): {now / count:.1f} bytes now, "
        f"{before / count:.1f} or more before"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
