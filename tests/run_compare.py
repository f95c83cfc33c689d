"""Comparing two runs of the same catalog: their feature shards and their neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from vasrch.features.extraction import feature_matrix


def shard_rows(cache_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(the shards' rows sorted by sha256, their vectors in that order)."""
    paths = sorted(cache_dir.glob("part-*.parquet"))
    tables = [pq.read_table(p) for p in paths]
    rows = pd.concat(
        [t.drop(["feature"]).to_pandas() for t in tables], ignore_index=True
    ).sort_values("sha256")
    vectors = np.concatenate([feature_matrix(t) for t in tables])[rows.index]
    return rows.reset_index(drop=True), vectors


def neighbour_rows(bulk_folder: Path) -> pd.DataFrame:
    """The neighbour shards of a bulk folder (a run's bulk/ or a bulk job's), sorted by image
    and rank."""
    shards = sorted(bulk_folder.glob("neighbours-*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    return frame.sort_values(["image_id", "rank"]).reset_index(drop=True)


def untied(frame: pd.DataFrame, tol: float = 1e-4) -> np.ndarray:
    """Rows whose score is apart from the scores ranked just above and below it."""
    same_query = frame["image_id"].eq(frame["image_id"].shift())
    gap_above = (frame["score"].shift() - frame["score"]).abs().where(same_query, np.inf)
    next_same = frame["image_id"].eq(frame["image_id"].shift(-1))
    gap_below = (frame["score"] - frame["score"].shift(-1)).abs().where(next_same, np.inf)
    return ((gap_above > tol) & (gap_below > tol)).to_numpy()


def assert_same_features(expected: Path, got: Path, images: int) -> None:
    """Two feature caches hold the same rows and vectors (to float tolerance), however they are
    split into shards (the scan's streamed extraction and mapped chunks split them differently)."""
    rows_e, vectors_e = shard_rows(expected)
    rows_g, vectors_g = shard_rows(got)
    assert len(rows_e) == images and rows_e["sha256"].is_unique
    pd.testing.assert_frame_equal(rows_g, rows_e)
    np.testing.assert_allclose(vectors_g, vectors_e, atol=1e-4)


def assert_same_neighbours(expected: Path, got: Path, rows: int) -> None:
    """Two bulk folders hold the same neighbours: images, ranks and scores (to float tolerance),
    and the same neighbour wherever its score is not tied with the next one's."""
    nb_e, nb_g = neighbour_rows(expected), neighbour_rows(got)
    assert len(nb_e) == rows
    assert (nb_g["image_id"] == nb_e["image_id"]).all()
    assert (nb_g["rank"] == nb_e["rank"]).all()
    np.testing.assert_allclose(nb_g["score"], nb_e["score"], atol=1e-4)
    apart = untied(nb_e) & untied(nb_g)
    assert apart.mean() > 0.5
    assert (nb_g["neighbour_id"][apart] == nb_e["neighbour_id"][apart]).all()
