"""Who may ask: the bearer token, CORS, and the refusal to listen publicly without a token."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.service_helpers import ORIGIN, TOKEN, exchange, query_server_command
from vasrch.service.runner import QueryServer
from vasrch.service.settings import ServiceSettings


def test_token_guards_every_api_path_but_health_and_the_docs(guarded: QueryServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/health", "/docs", "/redoc", "/openapi.json"):
        assert exchange(guarded, "GET", path)[0] == 200, path
    for method, path in (
        ("GET", "/query?id=hat/hat_001.jpg"),
        ("POST", "/query"),
        ("GET", "/metrics"),
        # the token is checked before the parameters: a stranger learns nothing from them
        ("GET", "/query?top_n=0&colour=red"),
        ("POST", "/query?probes=many"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, got, body = exchange(guarded, method, path, b"", headers)
            assert status == 401 and got["www-authenticate"] == "Bearer", (path, headers)
            assert "Authorization: Bearer" in json.loads(body)["error"]
    for path in ("/query?id=hat/hat_001.jpg", "/metrics"):
        assert exchange(guarded, "GET", path, headers=auth)[0] == 200, path
    lower = {"Authorization": f"bearer {TOKEN}"}
    status, _, body = exchange(guarded, "GET", "/query?id=hat/hat_001.jpg", headers=lower)
    # a server started without --show-paths answers with ids, never the server's files
    assert status == 200 and all("path" not in r for r in json.loads(body)["results"])


def test_cors_answers_preflights_from_the_named_origin_only(guarded: QueryServer) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    status, headers, _ = exchange(guarded, "OPTIONS", "/query", headers={"Origin": ORIGIN, **ask})
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()
    other = {"Origin": "https://elsewhere.example", **ask}
    status, headers, _ = exchange(guarded, "OPTIONS", "/query", headers=other)
    assert status == 400 and "access-control-allow-origin" not in headers
    # The answers themselves (401s included) carry the header, so the page can read them.
    status, headers, _ = exchange(guarded, "GET", "/query?id=x", headers={"Origin": ORIGIN})
    assert status == 401 and headers["access-control-allow-origin"] == ORIGIN


def test_public_address_needs_a_token_or_allow_public(served_workspace: Path) -> None:
    public = ServiceSettings(workspace=served_workspace, host="0.0.0.0")
    with pytest.raises(ValueError, match="--allow-public"):
        public.check()
    ServiceSettings(workspace=served_workspace, host="0.0.0.0", token="t").check()
    ServiceSettings(workspace=served_workspace, host="0.0.0.0", allow_public=True).check()
    ServiceSettings(workspace=served_workspace, host="localhost").check()
    with pytest.raises(ValueError, match="model_threads must be 0 or more"):
        ServiceSettings(workspace=served_workspace, model_threads=-1).check()
    done = subprocess.run(
        query_server_command(served_workspace, "--host", "0.0.0.0"),
        capture_output=True,
        text=True,
        env={**os.environ, "VASRCH_TOKEN": ""},
        timeout=120,
    )
    assert done.returncode == 2 and "--allow-public" in done.stderr
