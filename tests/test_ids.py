"""Compact ids: Arrow storage, positions through sorted hashes, NumPy conversion."""

from __future__ import annotations

import numpy as np

from vasrch.catalog.ids import Ids


def test_positions_take_and_conversion() -> None:
    names = [f"shirts/é{i:05d}.jpg" for i in range(5000)]
    ids = Ids.of(names)
    assert len(ids) == 5000 and ids[7] == names[7]
    rows = ids.positions([names[4321], None, "missing", names[0]])
    assert rows.tolist() == [4321, -1, -1, 0]
    picked = ids.take(np.array([3, 1]))
    assert np.asarray(picked).tolist() == [names[3], names[1]]
    assert np.asarray(picked).dtype == object
    assert ids[np.arange(5000) < 2].tolist() == names[:2]
    assert list(ids[10:12]) == names[10:12]


def test_held_compactly() -> None:
    ids = Ids.of([f"photo_{i:07d}" for i in range(10_000)])
    ids.positions(["photo_0000001"])
    # 13 bytes of text + 4 of offset + 12 of lookup a row, where Python strings take ~60 each
    assert ids.nbytes / len(ids) < 32


def test_positions_of_every_id_of_another_ids_and_of_repeats() -> None:
    names = [f"p{i}" for i in range(3000)]
    ids = Ids.of(names)
    order = np.random.default_rng(0).permutation(3000)
    assert (ids.positions(ids.take(order)) == order).all()
    repeated = Ids.of(["a", "b", "a", "c"])
    assert repeated.positions(["a", "c", "b", "z", 3]).tolist() == [0, 3, 1, -1, -1]
