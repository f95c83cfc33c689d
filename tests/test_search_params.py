"""top_n and probes: one rule (explicit argument, config, run's calibration), every entry point."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.configs import SMALL_RUN_BULK as BULK
from tests.configs import SMALL_RUN_SEARCH as SEARCH
from vasrch.config import BulkConfig, SearchConfig
from vasrch.errors import UsageError
from vasrch.search.parameters import (
    UNCALIBRATED_PROBES,
    SearchParams,
    check_count,
    resolve_search_params,
)


def test_explicit_arguments_win():
    configured = SearchConfig(top_n=4, probes=2)
    got = resolve_search_params(k=8, n=100, top_n=7, probes=5, configured=configured, calibrated=3)
    assert got == SearchParams(top_n=7, probes=5)


def test_config_values_apply_when_no_argument():
    got = resolve_search_params(
        k=8, n=100, configured=SearchConfig(top_n=4, probes=2), calibrated=3
    )
    assert got == SearchParams(top_n=4, probes=2)
    bulk = resolve_search_params(k=8, n=100, configured=BulkConfig(top_n=6, probes=1))
    assert bulk == SearchParams(top_n=6, probes=1)


def test_auto_probes_take_the_calibration_then_the_fallback():
    auto = SearchConfig(top_n=4, probes="auto")
    assert resolve_search_params(k=8, n=100, configured=auto, calibrated=5).probes == 5
    assert resolve_search_params(k=8, n=100, configured=auto).probes == UNCALIBRATED_PROBES
    assert resolve_search_params(k=8, n=100).top_n == SearchConfig().top_n


def test_capped_by_the_index():
    got = resolve_search_params(k=3, n=20, top_n=10**9, probes=50)
    assert got == SearchParams(top_n=20, probes=3)
    assert resolve_search_params(k=4, n=50, calibrated=9).probes == 4


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_non_positive_or_non_integer_arguments_are_usage_errors(bad):
    with pytest.raises(UsageError, match="top_n must be a whole number"):
        check_count("top_n", bad)
    assert check_count("probes", None) is None and check_count("probes", 3) == 3


# Every entry point, on the shared small run, whose config sets search and bulk differently.


def test_train_flow_bulk_step_uses_bulk_section_and_calibration(small_run):
    _, result = small_run
    assert result.manifest.bulk.top_n == BULK["top_n"]
    assert result.manifest.bulk.probes == result.manifest.calibration.probes
    shards = sorted((result.run_dir / "bulk").glob("neighbours-*.parquet"))
    table = pd.concat(pd.read_parquet(p) for p in shards)
    assert table.groupby("image_id")["rank"].max().max() == BULK["top_n"]


def test_bulk_flow_uses_the_rule(small_run):
    from vasrch.orchestration.flows.bulk import bulk_flow

    config, result = small_run
    default = bulk_flow(str(config))
    assert (default.summary.top_n, default.summary.probes) == (
        BULK["top_n"],
        result.manifest.calibration.probes,
    )
    explicit = bulk_flow(str(config), top_n=2, probes=1)
    assert (explicit.summary.top_n, explicit.summary.probes) == (2, 1)


def test_query_flow_uses_the_search_section(small_run, demo_catalog):
    from vasrch.orchestration.flows.query import query_flow

    config, _ = small_run
    query = str(next(demo_catalog.rglob("*.jpg")))
    default = query_flow(str(config), [query])
    assert default.params == SearchParams(top_n=SEARCH["top_n"], probes=SEARCH["probes"])
    table = pd.read_parquet(default.out_dir / "results.parquet")
    assert len(table) == SEARCH["top_n"]
    explicit = query_flow(str(config), [query], top_n=2, probes=1)
    assert explicit.params == SearchParams(top_n=2, probes=1)


def test_searcher_checks_the_arguments_it_is_called_with(small_run):
    from vasrch.search.searcher import open_run

    _, result = small_run
    searcher = open_run(result.run_dir.parents[1])
    image_id = searcher.index.ids[0]
    with pytest.raises(UsageError, match="top_n must be a whole number"):
        searcher.search_ids([image_id], top_n=0)
    with pytest.raises(UsageError, match="probes must be a whole number"):
        searcher.params(probes=-1)
    assert len(searcher.to_table(searcher.search_ids([image_id], top_n=3), [image_id])) == 3


def test_cli_query_uses_the_search_section(small_run, demo_catalog, capsys):
    from vasrch.cli import main

    config, _ = small_run
    query = str(next(demo_catalog.rglob("*.jpg")))
    assert main(["query", query, "--config", str(config), "--format", "table", "--top-n", "2"]) == 0
    # --top-n given, probes from the config's search section
    assert f"top 2 · {SEARCH['probes']} probes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main(["query", query, "--config", str(config), "--probes", "0"])
    assert refused.value.code == 2
    assert "--probes: must be at least 1" in capsys.readouterr().err


def test_query_server_uses_the_search_section(small_run):
    import http.client
    import threading

    from vasrch.config import load_config
    from vasrch.service.runner import make_server

    config, result = small_run
    cfg = load_config(config)
    for search, expected in (
        (cfg.search, (SEARCH["top_n"], SEARCH["probes"])),
        (None, (SearchConfig().top_n, result.manifest.calibration.probes)),
    ):
        server = make_server(cfg.workspace, port=0, search=search)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
            conn.request("GET", "/health")
            health = json.loads(conn.getresponse().read())
            conn.request("GET", "/query?id=" + server.holder.served.searcher.index.ids[0])
            answer = json.loads(conn.getresponse().read())
            conn.close()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
        assert (health["top_n"], health["probes"]) == expected
        assert len(answer["results"]) == expected[0]


def test_python_api_caps_top_n_and_refuses_zero_probes(tmp_path, demo_catalog):
    from vasrch import extract_features, search_similar_images, train_clusters

    features = tmp_path / "features"
    extract_features(demo_catalog, features, weights="none", image_size=32)
    model = tmp_path / "model.joblib"
    train_clusters(features, model, tmp_path / "clusters.csv", 4)
    query = next(demo_catalog.rglob("*.jpg"))
    everything = search_similar_images(query, model, tmp_path / "clusters.csv", top_n=10**9)
    assert 0 < len(everything) <= 48
    with pytest.raises(ValueError, match="probes must be a whole number"):
        search_similar_images(query, model, tmp_path / "clusters.csv", probes=0)
