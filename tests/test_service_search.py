"""Answers of the query service over real loopback HTTP: health, uploads of each kind, queries
by id, filters, concurrent clients."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.service_helpers import catalog_image, multipart, request, to_json_body, upload
from vasrch.service.runner import QueryServer
from vasrch.workspace import runs


def test_health_names_the_latest_run(server: QueryServer, served_workspace: Path) -> None:
    status, body = request(server, "GET", "/health")
    assert status == 200
    assert body["run_id"] == runs.latest_run_id(served_workspace)
    assert body["images"] == 48
    assert body["k"] >= 2
    assert body["uptime_s"] >= 0
    assert body["reload_error"] is None


@pytest.mark.parametrize("image_id", ["shoe/shoe_000.png", "mug/mug_004.jpg"])
def test_uploaded_copy_of_a_catalog_photo_finds_its_product_first(
    server: QueryServer, demo_catalog: Path, image_id: str
) -> None:
    suffix = Path(image_id).suffix.lstrip(".")
    status, body = upload(server, catalog_image(demo_catalog, image_id), ctype=f"image/{suffix}")
    assert status == 200, body
    assert body["run_id"] == server.holder.served.run_id
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["image_id"] == results[0]["product_id"] == image_id
    assert results[0]["category"] == image_id.split("/")[0]
    assert results[0]["score"] > 0.99  # under 1: query expansion blends in the best answers
    assert Path(results[0]["path"]).resolve() == (demo_catalog / image_id).resolve()
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert body["ms"] > 0
    # the catalog photo's own bytes: its product is left out, as asking for it by id does
    status, exact = upload(server, (demo_catalog / image_id).read_bytes(), ctype=f"image/{suffix}")
    assert status == 200 and image_id not in [r["product_id"] for r in exact["results"]]
    assert len(exact["results"]) == 5


def test_filters_in_the_query_string_and_the_json_body(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    status, body = upload(server, jpeg, "?filter.category=mug,bag&top_n=8")
    assert status == 200, body
    assert len(body["results"]) == 8 and {r["category"] for r in body["results"]} <= {"mug", "bag"}
    as_json = to_json_body(jpeg, filters={"category": "shoe"}, top_n=6)
    status, body = upload(server, as_json, ctype="application/json")
    assert status == 200, body
    assert [r["category"] for r in body["results"]] == ["shoe"] * 6
    status, by_id = request(server, "GET", "/query?id=hat/hat_001.jpg&filter.category=watch")
    assert status == 200 and {r["category"] for r in by_id["results"]} == {"watch"}
    status, body = request(server, "GET", "/query?id=hat/hat_001.jpg&filter.colour=red")
    assert status == 400 and "unknown filter column 'colour'" in body["error"]
    assert "category" in body["error"]


def test_multipart_upload_and_query_by_id_agree(server: QueryServer, demo_catalog: Path) -> None:
    image_id = "bag/bag_002.jpg"
    form, ctype = multipart("image", "my bag.jpg", catalog_image(demo_catalog, image_id))
    status, uploaded = upload(server, form, "?top_n=6&probes=2", ctype)
    assert status == 200, uploaded
    assert uploaded["query"] == "my bag.jpg"
    assert uploaded["results"][0]["product_id"] == image_id

    status, by_id = request(server, "GET", f"/query?id={quote(image_id)}&top_n=5&probes=2")
    assert status == 200, by_id
    assert by_id["query"] == image_id
    ids = [r["image_id"] for r in by_id["results"]]
    assert image_id not in ids and len(ids) == 5
    # By id, the query is the photo's stored (augmented) vector; uploaded, its own features: the
    # answers agree on the neighbours up to the order of near ties.
    assert len(set(ids) & {r["image_id"] for r in uploaded["results"][1:]}) >= 4


def test_json_base64_upload_answers_like_the_raw_upload(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "bottle/bottle_002.jpg")
    status, uploaded = upload(server, jpeg, "?top_n=4")
    assert status == 200, uploaded
    status, as_json = upload(server, to_json_body(jpeg, top_n=4), ctype="application/json")
    assert status == 200, as_json
    assert as_json["results"] == uploaded["results"] and len(uploaded["results"]) == 4
    data_url = b"data:image/jpeg;base64," + base64.b64encode(jpeg)
    body = json.dumps({"image_base64": data_url.decode(), "probes": 2, "filters": {}}).encode()
    status, answer = upload(server, body, "?top_n=3", ctype="application/json")
    assert status == 200, answer
    assert answer["results"][0]["image_id"] == "bottle/bottle_002.jpg"
    assert len(answer["results"]) == 3


def test_concurrent_uploads_each_get_their_own_answer(
    server: QueryServer, demo_catalog: Path
) -> None:
    ids = [f"{c}/{c}_00{i}.jpg" for c in ("tshirt", "trousers", "bottle", "watch") for i in (1, 2)]
    answers: dict[str, list[str]] = {}

    def client(image_id: str) -> None:
        data = catalog_image(demo_catalog, image_id)
        answers[image_id] = [upload(server, data)[1]["results"][0]["image_id"] for _ in range(3)]

    threads = [threading.Thread(target=client, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert answers == {i: [i, i, i] for i in ids}
