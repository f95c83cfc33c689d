"""Changes between the photos a run indexes and the catalog now: added, removed, replaced
bytes, re-described products, and products that appeared or left."""

from __future__ import annotations

import pandas as pd

from vasrch.catalog.changes import catalog_changes


def table(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "sha256", "product_id", "title", "price"])


def test_every_kind_of_change_is_named() -> None:
    indexed = table(
        [
            ("a.jpg", "h1", "A", "Shoe", "10"),
            ("b.jpg", "h2", "B", "Hat", "5"),
            ("c.jpg", "h3", "C", "Bag", "20"),
            ("d.jpg", "h4", "D", "Belt", "8"),
            ("e.jpg", "h5", "E", "Sock", "2"),
        ]
    )
    current = table(
        [
            ("a.jpg", "h1", "A", "Shoe", "10"),  # unchanged
            ("b.jpg", "h2", "B", "Hat", "4"),  # repriced
            ("c.jpg", "h9", "C", "Bag", "20"),  # new bytes
            ("d.jpg", "h4", "A", "Shoe", "10"),  # moved to product A
            ("f.jpg", "h6", "F", "Scarf", "7"),  # new listing
        ]
    )  # e.jpg withdrawn
    before, after = list(indexed["image_id"]), list(current["image_id"])
    changes = catalog_changes(indexed, before, current, after)
    assert changes.added == ("f.jpg",)
    assert changes.removed == ("e.jpg",)
    assert changes.replaced == ("c.jpg",)
    assert changes.described == ("b.jpg", "d.jpg")
    assert changes.products_added == ("F",)
    assert changes.products_removed == ("D", "E")
    assert not changes.empty
    assert changes.counts()["changed"] == 2


def test_the_same_catalog_is_empty_and_only_indexed_photos_count() -> None:
    indexed = table([("a.jpg", "h1", "A", "Shoe", "10"), ("x.jpg", "h7", "X", "Bad", "1")])
    current = table([("a.jpg", "h1", "A", "Shoe", "10"), ("x.jpg", "h7", "X", "Bad", "1")])
    # x.jpg was rejected at extraction both times: it is in neither index
    assert catalog_changes(indexed, ["a.jpg"], current, ["a.jpg"]).empty
    # once it decodes (a retried rejection), it is added
    assert catalog_changes(indexed, ["a.jpg"], current, ["a.jpg", "x.jpg"]).added == ("x.jpg",)
    # a new metadata column counts as a change of every photo that has a value in it
    richer = current.assign(colour=["red", ""])
    assert catalog_changes(indexed, ["a.jpg"], richer, ["a.jpg"]).described == ("a.jpg",)
