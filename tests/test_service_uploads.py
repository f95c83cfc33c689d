"""Bad requests and bad uploads get 4xx answers that say why, and the service keeps serving:
parameters, sizes, media types, JSON bodies, pixel bombs, busy decode slots."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

from tests.imagefactory import write_flat_rgb_png, write_png_bomb, write_png_declaring
from tests.service_helpers import (
    MAX_UPLOAD,
    TOKEN,
    catalog_image,
    exchange,
    metric_values,
    multipart,
    request,
    to_json_body,
    upload,
)
from vasrch.service.runner import QueryServer


def test_bad_requests_get_4xx_reasons_and_the_server_keeps_serving(
    server: QueryServer, demo_catalog: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    form_without_image, form_type = multipart("picture", "x.jpg", jpeg)
    cases = [
        (upload(server, b"this is not an image at all"), 400, "not a usable image"),
        (upload(server, jpeg[: len(jpeg) // 2]), 400, "truncated"),
        (upload(server, b""), 400, "empty upload"),
        (upload(server, os.urandom(MAX_UPLOAD + 1)), 413, "larger than the limit"),
        (upload(server, jpeg, ctype="text/plain"), 415, "Content-Type"),
        (upload(server, form_without_image, ctype=form_type), 400, "no field named 'image'"),
        (upload(server, jpeg, "?top_n=0"), 400, "top_n"),
        (upload(server, jpeg, "?probes=many"), 400, "probes"),
        (request(server, "GET", "/query?id=hat/hat_001.jpg&top_n=100000"), 400, "top_n"),
        (request(server, "GET", "/query?id=hat/hat_001.jpg&topn=3"), 400, "unknown"),
        (request(server, "GET", "/query?id=no/such/image.jpg"), 404, "not in run"),
        (request(server, "GET", "/query"), 400, "id="),
        (request(server, "GET", "/nowhere"), 404, "no such path"),
        (request(server, "DELETE", "/query"), 405, "not allowed"),
        (request(server, "POST", "/health", b"{}"), 405, "not allowed"),
    ]
    for (status, body), expected, fragment in cases:
        assert status == expected, (expected, fragment, body)
        assert fragment in body["error"], (fragment, body)

    status, body = request(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, body = upload(server, jpeg)
    assert status == 200 and body["results"][0]["image_id"] == "hat/hat_001.jpg"


def test_oversized_upload_is_refused_from_its_content_length(server: QueryServer) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest("POST", "/query")
        conn.putheader("Content-Type", "image/jpeg")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "larger than the limit" in json.loads(response.read())["error"]
    finally:
        conn.close()


def test_bad_json_bodies_and_big_images_get_4xx_reasons(
    server: QueryServer, demo_catalog: Path, tmp_path: Path
) -> None:
    jpeg = catalog_image(demo_catalog, "hat/hat_001.jpg")
    as_json = "application/json"
    bomb = write_png_bomb(tmp_path / "bomb.png", 9400, 9400).read_bytes()  # 88 MP, 11 KB
    huge = write_png_bomb(tmp_path / "huge.png").read_bytes()  # 400 MP: past Pillow's own limit
    liar = write_png_declaring(tmp_path / "liar.png", 8000, 8000).read_bytes()
    cases = [
        (
            upload(server, to_json_body(jpeg, filters={"colour": "red"}), ctype=as_json),
            400,
            "unknown filter column 'colour'",
        ),
        (
            upload(
                server,
                to_json_body(jpeg, filters={"category": "hat"}),
                "?filter.category=hat",
                as_json,
            ),
            400,
            "both",
        ),
        (
            upload(server, to_json_body(jpeg, filters={"category": 3}), ctype=as_json),
            400,
            "filters.category",
        ),
        (
            upload(server, b'{"image_base64": "not base64!"}', ctype=as_json),
            400,
            "not valid base64",
        ),
        (upload(server, b'{"image": "abc"}', ctype=as_json), 400, "image_base64: Field required"),
        (upload(server, to_json_body(jpeg, colour="red"), ctype=as_json), 400, "colour"),
        (upload(server, to_json_body(jpeg, top_n=0), ctype=as_json), 400, "top_n"),
        (upload(server, to_json_body(jpeg, top_n="5"), ctype=as_json), 400, "top_n"),
        (upload(server, to_json_body(jpeg, top_n=3), "?top_n=3", as_json), 400, "both"),
        (upload(server, b"{not json", ctype=as_json), 400, "Invalid JSON"),
        (
            upload(server, to_json_body(b""), ctype=as_json),
            400,
            "image_base64: String should have at least 1 character",
        ),
        (
            upload(server, b'{"image_base64": "data:image/png;base64,"}', ctype=as_json),
            400,
            "empty upload",
        ),
        (
            upload(server, to_json_body(os.urandom(MAX_UPLOAD + 1)), ctype=as_json),
            413,
            "larger than the limit",
        ),
        (
            upload(server, to_json_body(b"GIF89a not really"), ctype=as_json),
            400,
            "not a usable image",
        ),
        (upload(server, bomb, ctype="image/png"), 413, "larger than the query limit"),
        (upload(server, huge, ctype="image/png"), 413, "larger than the query limit"),
        (upload(server, liar, ctype="image/png"), 413, "max_query_pixels"),
        (upload(server, to_json_body(bomb), ctype=as_json), 413, "larger than the query limit"),
    ]
    for (status, body), expected, fragment in cases:
        assert status == expected, (expected, fragment, body)
        assert fragment in body["error"], (fragment, body)
    assert upload(server, jpeg)[0] == 200


def test_busy_decode_slots_answer_503_with_retry_after(
    guarded: QueryServer, tmp_path: Path
) -> None:
    """One decode slot, no waiting: a second upload while a big one decodes gets 503."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}
    big = write_flat_rgb_png(tmp_path / "big.png", 6000, 6000).read_bytes()
    small = write_flat_rgb_png(tmp_path / "small.png", 64, 64).read_bytes()
    first: list[int] = []
    worker = threading.Thread(
        target=lambda: first.append(exchange(guarded, "POST", "/query", big, auth)[0])
    )
    worker.start()
    deadline = time.monotonic() + 30
    decoding = 0.0
    while worker.is_alive() and not decoding and time.monotonic() < deadline:
        decoding = metric_values(guarded, auth)["vasrch_decodes_in_progress"]
    status, headers, body = exchange(guarded, "POST", "/query", small, auth)
    worker.join(timeout=60)
    assert decoding == 1, "the big upload finished before it was seen decoding"
    assert status == 503 and headers["retry-after"] == "1"
    assert "retry" in json.loads(body)["error"]
    assert first == [200]
    assert exchange(guarded, "POST", "/query", small, auth)[0] == 200
