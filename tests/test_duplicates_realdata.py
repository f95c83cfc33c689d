"""Near-duplicates among real product photos (../shared/datasets/clothing-small) with planted
listing edits, at the default threshold."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.listing_edits import EDITS, edited_jpeg
from vasrch.bulk.neighbours import bulk_neighbours_for_clusters, plan_cluster_chunks
from vasrch.catalog.scan import scan_catalog
from vasrch.config import BulkConfig
from vasrch.duplicates.groups import duplicate_groups, duplicate_pairs
from vasrch.features.backbones import BackboneSpec, load_backbone
from vasrch.features.extraction import extract_chunk, load_prints, load_vectors, plan_chunks
from vasrch.index.clustering import train_kmeans
from vasrch.index.search_index import build_index

pytestmark = pytest.mark.realdata

EDITED, DISTRACTORS = 39, 40


def plant(dataset: Path, catalog_dir: Path) -> set[tuple[str, str]]:
    """Copy EDITED + DISTRACTORS photos; give each of the first EDITED two different edits of
    EDITS (every edit six times); return the planted pairs."""
    photos = sorted((dataset / "train").rglob("*.jpg"))
    chosen = np.random.default_rng(0).choice(len(photos), EDITED + DISTRACTORS, replace=False)
    kinds = itertools.cycle(sorted(EDITS))
    truth = set()
    for n, i in enumerate(chosen):
        photo = photos[i]
        original = f"{photo.parent.name}/{photo.name}"
        (catalog_dir / photo.parent.name).mkdir(parents=True, exist_ok=True)
        (catalog_dir / original).write_bytes(photo.read_bytes())
        if n >= EDITED:
            continue
        copies = [original]
        for _ in range(2):
            kind = next(kinds)
            copy = f"{original[:-4]}~{kind}.jpg"
            (catalog_dir / copy).write_bytes(edited_jpeg(Image.open(photo), kind))
            copies.append(copy)
        truth.update(tuple(sorted(p)) for p in itertools.combinations(copies, 2))
    return truth


def test_planted_listing_edits_are_found_at_the_default_threshold(dataset, tmp_path):
    catalog_dir = tmp_path / "catalog"
    truth = plant(dataset, catalog_dir)
    catalog = scan_catalog(catalog_dir).table
    cache = tmp_path / "cache"
    backbone = load_backbone(BackboneSpec())
    for rows in plan_chunks(catalog, cache, 256):
        extract_chunk(rows, backbone, cache)
    ids, vectors = load_vectors(cache, catalog)
    _, prints = load_prints(cache, catalog)
    model = train_kmeans(vectors, 4, seed=0)
    index = build_index(ids, vectors, model.cluster_centers_, model.labels_, "fp", prints=prints)
    neighbours = pd.concat(
        bulk_neighbours_for_clusters(
            index, chunk, top_n=10, probes=2, candidates=BulkConfig().duplicate_candidates
        )
        for chunk in plan_cluster_chunks(index, 1000)
    )
    pairs = duplicate_pairs(neighbours, BulkConfig().duplicate_threshold)
    groups = duplicate_groups(pairs, catalog["image_id"].tolist())
    found = {
        tuple(sorted(p))
        for _, members in groups.groupby("group_id")["image_id"]
        for p in itertools.combinations(members, 2)
    }
    hits = len(found & truth)
    assert hits / len(truth) >= 0.98, sorted(truth - found)
    assert hits / len(found) >= 0.98, sorted(found - truth)
    # No group holds a photo that is not a copy of its representative's photo.
    origin = groups["image_id"].str.replace(r"~.*\.jpg$", ".jpg", regex=True)
    assert origin.groupby(groups["group_id"]).nunique().eq(1).all()
