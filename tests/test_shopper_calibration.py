"""Calibrating probes on simulated shopper photos (issue 23): the simulation itself, and probes
that hold for queries less like the catalog than its own photos are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vasrch.config import ClusteringConfig, EvaluationConfig, SearchConfig
from vasrch.features.shopper_photos import simulate_shopper_photos
from vasrch.index.clustering import l2_normalise
from vasrch.index.training import HeldOut, SimulatedQueries, evaluate_index, fit_index


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.repeat(np.repeat(rng.integers(0, 255, (6, 8, 3), np.uint8), 20, 0), 20, 1)
    Image.fromarray(pixels).save(path, quality=92)
    return path


def test_simulated_shopper_photos_are_reproducible_and_unlike_the_photo(tmp_path: Path) -> None:
    paths = [_photo(tmp_path / f"p{i}.jpg", i) for i in range(4)]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.insert(2, tmp_path / "broken.jpg")
    kept, pixels = simulate_shopper_photos(paths, 64, seed=3)
    assert kept == [0, 1, 3, 4]  # the undecodable file is skipped, not fatal
    assert pixels.shape == (4, 64, 64, 3) and pixels.dtype == np.uint8
    again = simulate_shopper_photos(paths, 64, seed=3)[1]
    np.testing.assert_array_equal(pixels, again)
    other = simulate_shopper_photos(paths, 64, seed=4)[1]
    assert not np.array_equal(pixels, other)
    original = np.asarray(Image.open(paths[0]).convert("RGB").resize((64, 64)), dtype=float)
    assert np.abs(pixels[0].astype(float) - original).mean() > 10  # really changed


def _world(seed: int = 0, d: int = 32, n: int = 2000):
    """Catalog photos around 100 kinds of product; shopper photos of the same kinds, noisier and
    shifted along one direction (their own light and background)."""
    rng = np.random.default_rng(seed)
    kinds = rng.normal(size=(100, d))
    shift = 4.0 * l2_normalise(rng.normal(size=(1, d)))
    of = rng.integers(0, 100, n)
    catalog = l2_normalise(kinds[of] + rng.normal(scale=0.5, size=(n, d)) + 1.5)
    ids = np.array([f"c{i:05d}" for i in range(n)], dtype=object)

    def shopper(of_kind: np.ndarray) -> np.ndarray:
        noise = rng.normal(scale=1.0, size=(len(of_kind), d))
        return l2_normalise(kinds[of_kind] + noise + 1.5 + shift)

    return ids, catalog, of, shopper


def test_simulated_shopper_photos_raise_probes_until_new_photos_reach_the_target() -> None:
    ids, catalog, of, shopper = _world()
    labels = pd.Series(of.astype(str), index=ids)
    search = SearchConfig(max_probes=32)
    index, _ = fit_index(ids, catalog, 40, "fp", ClusteringConfig(), None, search)
    evaluation = EvaluationConfig(sample=300)
    simulated = SimulatedQueries(ids[:300], shopper(of[:300]))
    new_kinds = np.random.default_rng(9).integers(0, 100, 400)
    new_ids = np.array([f"n{i}" for i in range(400)], dtype=object)
    new = HeldOut(new_ids, shopper(new_kinds), pd.Series(new_kinds.astype(str), index=new_ids))

    catalog_only = evaluate_index(index, ids, catalog, labels, search, evaluation)
    with_shoppers = evaluate_index(index, ids, catalog, labels, search, evaluation, None, simulated)
    assert "300 simulated shopper photos" in with_shoppers.calibrated_on
    assert "simulated" not in catalog_only.calibrated_on
    assert with_shoppers.probes > catalog_only.probes
    assert with_shoppers.recall_at_10 >= search.target_recall

    def new_photo_recall(probes: int) -> float:
        fixed = search.model_copy(update={"probes": probes})
        figures = evaluate_index(index, ids, catalog, labels, fixed, evaluation, new)
        return figures.held_out.recall_at_10

    at_shoppers = new_photo_recall(with_shoppers.probes)
    assert at_shoppers >= search.target_recall
    assert at_shoppers > new_photo_recall(catalog_only.probes)


def test_the_hardest_simulated_photos_hold_recall_for_new_photos_less_like_the_catalog() -> None:
    """Simulated photos of every degree of change up to one; new photos changed more than any:
    the fraction of simulated photos farthest from every centroid sets a margin that holds."""
    ids, catalog, of, _ = _world()
    rng = np.random.default_rng(1)
    kinds = np.random.default_rng(0).normal(size=(100, 32))  # the world's kinds of product

    def photos(of_kind: np.ndarray, noise: np.ndarray) -> np.ndarray:
        change = rng.normal(size=(len(of_kind), 32)) * noise[:, None]
        return l2_normalise(kinds[of_kind] + change + 1.5)

    search = SearchConfig(max_probes=40)
    index, _ = fit_index(ids, catalog, 40, "fp", ClusteringConfig(), None, search)
    simulated = SimulatedQueries(ids[:300], photos(of[:300], rng.uniform(0.3, 1.0, 300)))
    new_ids = np.array([f"n{i}" for i in range(400)], dtype=object)
    new = HeldOut(new_ids, photos(rng.integers(0, 100, 400), np.full(400, 3.0)), None)

    def calibrated(hardest: float) -> tuple[int, str, float]:
        evaluation = EvaluationConfig(sample=300, simulated_hardest=hardest)
        chosen = evaluate_index(index, ids, catalog, None, search, evaluation, None, simulated)
        fixed = search.model_copy(update={"probes": chosen.probes})
        figures = evaluate_index(index, ids, catalog, None, fixed, evaluation, new)
        return chosen.probes, chosen.calibrated_on, figures.held_out.recall_at_10

    all_probes, all_on, all_recall = calibrated(1.0)
    hard_probes, hard_on, hard_recall = calibrated(0.25)
    assert "farthest" not in all_on
    assert "also the 75 farthest from every cluster centre" in hard_on
    assert all_recall < search.target_recall  # new photos beyond the simulation's changes
    assert hard_probes > all_probes
    assert hard_recall >= search.target_recall
