"""Query jobs answered by the workspace's warm service (vasrch.query_jobs.routing), and the
service's record in the workspace that they find it by."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.service_helpers import TOKEN, serving
from vasrch.config import load_config
from vasrch.query_jobs.routing import QuerySetup, answer_here, answer_queries
from vasrch.query_jobs.service_client import ServiceUnusable, find_service, search_served
from vasrch.search.parameters import SearchParams
from vasrch.service.record import advertise, read_record
from vasrch.service.runner import QueryServer


@pytest.fixture(scope="module")
def advertised(served_workspace: Path) -> Iterator[QueryServer]:
    """A service that advertised itself in the workspace's record when it started."""
    with serving(served_workspace, access_log=False) as s:
        yield s


def query_images(demo_catalog: Path, tmp_path: Path) -> list[Path]:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ids = ["hat/hat_001.jpg", "watch/watch_003.png", "shoe/shoe_000.png"]
    return [demo_catalog / i for i in ids] + [broken]


def test_a_query_job_gets_the_same_answers_from_the_service_as_embedded_here(
    advertised: QueryServer, served_workspace: Path, demo_catalog: Path, tmp_path: Path, caplog
) -> None:

    record = read_record(served_workspace)
    assert (record.url, record.instance) == (advertised.url, advertised.settings.instance)
    assert record.pid == os.getpid() and record.token is False
    cfg = load_config(served_workspace.parent / "config.yaml")
    setup = QuerySetup(cfg.workspace, cfg.search, cfg.features)
    files = query_images(demo_catalog, tmp_path)
    with caplog.at_level(logging.INFO, logger="test-routing"):
        served = answer_queries(setup, files, None, 4, None, logging.getLogger("test-routing"))
    assert f"answered by the query service at {advertised.url}" in caplog.text
    here = answer_here(setup, files, None, 4, None)
    assert (served.run_id, served.params) == (here.run_id, here.params)
    assert served.answers.rejected == here.answers.rejected
    assert [r["query"] for r in served.answers.rejected] == [str(files[-1])]
    mine, theirs = served.answers.table, here.answers.table
    assert len(mine) == 3 * 4 and list(mine.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(mine.drop(columns="score"), theirs.drop(columns="score"))
    assert mine["score"].dtype == theirs["score"].dtype
    # one image at a time there, batched here: float32 rounding apart
    np.testing.assert_allclose(mine["score"], theirs["score"], atol=1e-5)
    # catalog photos' own bytes: neither path answers a photo with its own product
    own = {str(f): f.relative_to(demo_catalog).as_posix() for f in files[:3]}
    assert not any(own[q] == p for q, p in zip(mine["query"], mine["product_id"], strict=True))


def test_a_served_query_job_loads_no_model_libraries(
    advertised: QueryServer, served_workspace: Path, demo_catalog: Path
) -> None:
    code = """
import json, sys
from pathlib import Path
from vasrch.config import load_config
from vasrch.query_jobs.routing import QuerySetup, answer_served
cfg = load_config(sys.argv[1])
setup = QuerySetup(cfg.workspace, cfg.search, cfg.features)
answered = answer_served(setup, [Path(sys.argv[2])], None, 2, None)
heavy = sorted({"tensorflow", "keras", "sklearn"} & set(sys.modules))
print(json.dumps([answered.answers.table["image_id"].tolist(), heavy]))
"""
    image = demo_catalog / "mug" / "mug_004.jpg"
    done = subprocess.run(
        [sys.executable, "-c", code, str(served_workspace.parent / "config.yaml"), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ids, heavy = json.loads(done.stdout.splitlines()[-1])
    # the catalog photo's own bytes: its own product is left out, as a local search does
    assert len(ids) == 2 and "mug/mug_004.jpg" not in ids
    assert heavy == []


def test_a_stale_foreign_or_guarded_service_is_not_used(
    advertised: QueryServer, guarded: QueryServer, served_workspace: Path, demo_catalog: Path
) -> None:

    def why(run: str | None = None, token: str | None = None) -> str:
        with pytest.raises(ServiceUnusable) as refusal:
            find_service(served_workspace, run, token)
        return str(refusal.value)

    mine = advertised.settings
    with advertise(served_workspace, advertised.url, mine.instance, False, mine.secret):
        assert find_service(served_workspace, None, None).url == advertised.url
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        with advertise(served_workspace, closed, "killed-9", False, "its-key"):
            assert "stale record" in why() and "not running" in why()
        with advertise(served_workspace, advertised.url, "an-earlier-one", False, mine.secret):
            assert "did not prove" in why()
        assert "run 'missing-run' not found" in why(run="missing-run")
    image = [demo_catalog / "hat" / "hat_001.jpg"]
    params = SearchParams(top_n=2, probes=1)
    with advertise(served_workspace, guarded.url, guarded.settings.instance, token=True):
        assert "needs a token" in why()
        # a wrong token fails the identity proof: it is never sent
        assert "did not prove" in why(token="a-wrong-token")
        accepted = find_service(served_workspace, None, TOKEN)
        table = search_served(accepted, image, params).table
        # the catalog photo's own bytes: answered, its own product left out
        assert len(table) == 2 and "hat/hat_001.jpg" not in table["product_id"].tolist()


def test_a_service_stopping_gives_the_record_back_to_the_one_it_replaced(tmp_path: Path) -> None:

    served_workspace = tmp_path / "ws"
    served_workspace.mkdir()
    with advertise(served_workspace, "http://127.0.0.1:1", "first", token=False) as first:
        with advertise(served_workspace, "http://127.0.0.1:2", "second", token=True) as second:
            assert read_record(served_workspace) == second
        assert read_record(served_workspace) == first
    assert read_record(served_workspace) is None
