"""Hiding products through the service: token-only, and the next answer leaves them out."""

from __future__ import annotations

import json

from tests.service_helpers import TOKEN, exchange
from vasrch.service.runner import QueryServer


def _post(server: QueryServer, path: str, body: object, token: str | None = TOKEN):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, data = exchange(server, "POST", path, json.dumps(body).encode(), headers)
    return status, json.loads(data)


def _answer(server: QueryServer, image_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    status, _, data = exchange(server, "GET", f"/query?id={image_id}&top_n=5", headers=headers)
    assert status == 200, data
    return [row["product_id"] for row in json.loads(data)["results"]]


def test_hide_and_unhide_through_the_service(guarded: QueryServer) -> None:
    query = "hat/hat_001.jpg"
    first = _answer(guarded, query)
    assert _post(guarded, "/products/hide", {"product_ids": [first[0]]}, token=None)[0] == 401
    assert _post(guarded, "/products/hide", {"product_ids": []})[0] == 400
    assert _post(guarded, "/products/hide", {"product_ids": [""]})[0] == 400
    try:
        status, body = _post(guarded, "/products/hide", {"product_ids": [first[0]]})
        assert status == 200 and body == {"changed": [first[0]], "unchanged": 0}
        after = _answer(guarded, query)
        assert first[0] not in after and len(after) == 5
        status, _, data = exchange(
            guarded, "GET", "/products/hidden", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 200 and first[0] in json.loads(data)["products"]
    finally:
        status, body = _post(guarded, "/products/unhide", {"product_ids": [first[0]]})
    assert status == 200 and body["changed"] == [first[0]]
    assert _answer(guarded, query)[0] == first[0]


def test_a_service_without_a_token_refuses_to_hide(server: QueryServer) -> None:
    status, body = _post(server, "/products/hide", {"product_ids": ["x"]}, token=None)
    assert status == 403 and "needs a token" in body["error"]
