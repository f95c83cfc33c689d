"""The hidden-products record: hide, unhide, settle against the catalog, concurrent writers,
and a damaged record refused with a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vasrch.workspace.hidden import (
    HiddenRecordError,
    hide,
    read_hidden,
    record_stamp,
    settle,
    unhide,
)


def test_hide_unhide_and_settle(tmp_path: Path) -> None:
    assert read_hidden(tmp_path).ids == frozenset() and record_stamp(tmp_path) is None
    assert hide(tmp_path, ["A", "B", "A"], by="test") == ["A", "B"]
    first = read_hidden(tmp_path).entries["A"]
    assert hide(tmp_path, ["A", "C"], by="other") == ["C"]
    assert read_hidden(tmp_path).entries["A"] == first  # the first record is kept
    assert unhide(tmp_path, ["B", "Z"]) == ["B"]
    assert read_hidden(tmp_path).ids == {"A", "C"}
    # the catalog dropped C itself: the record forgets it; A is still listed, so stays hidden
    assert settle(tmp_path, ["A", "D"]) == ["C"]
    assert read_hidden(tmp_path).ids == {"A"}
    assert record_stamp(tmp_path) is not None


def test_concurrent_hides_lose_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from vasrch.workspace.hidden import hide\n"
        "for i in range(40): hide(Path(sys.argv[1]), [f'{sys.argv[2]}-{i}'], by='p')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name])
        for name in ("x", "y", "z")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(read_hidden(tmp_path).ids) == 120


def test_a_damaged_record_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "hidden-products.json").write_text('{"products": [1, 2]}')
    with pytest.raises(HiddenRecordError, match="delete it to unhide every product"):
        read_hidden(tmp_path)
    with pytest.raises(HiddenRecordError):
        hide(tmp_path, ["A"], by="t")


def test_a_hidden_product_leaves_every_answer_of_the_served_run_at_once(small_run) -> None:
    from vasrch.search.searcher import open_run

    workspace = small_run.workspace
    searcher = open_run(workspace)
    photo = searcher.index.ids[0]
    before = searcher.search_ids([photo], top_n=5)
    victim = searcher.products.of([before.ids[0][0]])[0]
    filters = {"category": [searcher.products.describe([before.ids[0][0]])["category"][0]]}
    try:
        hide(workspace, [victim], by="test")
        # the same searcher, no reload: the next answer leaves the product out
        for result in (
            searcher.search_ids([photo], top_n=5),
            searcher.search_ids([photo], top_n=5, filters=filters),
            searcher.search_vectors(searcher.index.vectors[:20], top_n=10),
        ):
            found = result.ids[result.ids != ""]
            assert victim not in set(searcher.products.of(found))
        assert len(searcher.search_ids([photo], top_n=5).ids[0]) == 5  # still top 5
    finally:
        unhide(workspace, [victim])
    assert searcher.search_ids([photo], top_n=5).ids[0][0] == before.ids[0][0]
