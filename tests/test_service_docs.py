"""The OpenAPI document, generated from the declared parameters and models, says exactly what the
service accepts and answers; the docs pages and their assets come from the service itself."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest

from tests.service_helpers import TOKEN, exchange, request, to_json_body, upload
from vasrch.service.runner import QueryServer

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def spec(server: QueryServer) -> dict[str, Any]:
    status, document = request(server, "GET", "/openapi.json")
    assert status == 200
    return document


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A JSON Schema (2020-12, as OpenAPI 3.1 uses) validator of `schema`, whose references
    resolve in the document's components."""
    return jsonschema.Draft202012Validator({**schema, "components": spec["components"]})


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_openapi_describes_the_endpoints(spec: dict[str, Any]) -> None:
    assert set(spec["paths"]) == {
        "/health",
        "/identify",
        "/query",
        "/metrics",
        "/products/hide",
        "/products/unhide",
        "/products/hidden",
    }
    post = spec["paths"]["/query"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "image/*",
        "application/octet-stream",
        "multipart/form-data",
        "application/json",
    }
    assert {p["name"] for p in post["parameters"]} == {"top_n", "probes", "filters"}
    assert {"400", "411", "413", "415", "503", "default"} <= set(post["responses"])
    get = spec["paths"]["/query"]["get"]
    assert {p["name"] for p in get["parameters"]} == {"id", "top_n", "probes", "filters"}
    assert parameter(get, "id")["required"] is True
    # refusals are 400s with {"error": ...}, never FastAPI's 422 shape
    assert not any("422" in op["responses"] for op in (get, post))
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    # a server without a token asks for none
    assert "securitySchemes" not in spec["components"]
    assert not any("security" in op for path in spec["paths"].values() for op in path.values())


def test_the_document_is_exact(server: QueryServer, spec: dict[str, Any]) -> None:
    """Each value the document refuses, the service refuses (400); each it allows, the service
    answers, and the answers have the documented shapes."""
    get = spec["paths"]["/query"]["get"]
    body = spec["paths"]["/query"]["post"]["requestBody"]["content"]
    schema_of = {name: validator(spec, parameter(get, name)["schema"]) for name in ("id", "top_n")}
    as_json = validator(spec, body["application/json"]["schema"])
    filters = validator(spec, parameter(get, "filters")["schema"])
    raw = validator(spec, body["image/*"]["schema"])
    refused = [
        (schema_of["id"], "", "/query?id="),
        (schema_of["top_n"], 0, "/query?id=hat/hat_001.jpg&top_n=0"),
        (schema_of["top_n"], 1001, "/query?id=hat/hat_001.jpg&top_n=1001"),
        (filters, {"filter.category": ""}, "/query?id=hat/hat_001.jpg&filter.category="),
        (filters, {"category": "hat"}, "/query?id=hat/hat_001.jpg&category=hat"),
        (filters, {"filter. ": "hat"}, "/query?id=hat/hat_001.jpg&filter.%20=hat"),
    ]
    for schema, value, path in refused:
        assert not schema.is_valid(value), value
        status, answer = request(server, "GET", path)
        assert status == 400, (path, answer)
    assert (
        "id=: String should have at least 1 character"
        in request(server, "GET", "/query?id=")[1]["error"]
    )

    bad_json = (
        {"image_base64": ""},
        {"image_base64": "0"},  # not base64: the document's pattern says so too
        {"image_base64": "aGk=", "top_n": 0},
        {"image": "aGk="},
    )
    for value in bad_json:
        assert not as_json.is_valid(value), value
        assert upload(server, json.dumps(value).encode(), ctype="application/json")[0] == 400
    assert not raw.is_valid("")
    assert upload(server, b"", ctype="image/png")[0] == 400

    answer_schema = validator(
        spec, get["responses"]["200"]["content"]["application/json"]["schema"]
    )
    error_schema = validator(spec, get["responses"]["404"]["content"]["application/json"]["schema"])
    allowed = {"filter.category": "hat,bag"}
    assert filters.is_valid(allowed) and schema_of["top_n"].is_valid(1000)
    status, answer = request(
        server, "GET", f"/query?id={quote('hat/hat_001.jpg')}&top_n=1000&filter.category=hat,bag"
    )
    assert status == 200 and answer_schema.is_valid(answer), answer
    assert {r["category"] for r in answer["results"]} <= {"hat", "bag"}
    status, answer = request(server, "GET", "/query?id=no/such.jpg")
    assert status == 404 and error_schema.is_valid(answer)
    example = body["application/json"]["example"]  # what "Try it out" in /docs sends
    assert as_json.is_valid(example)
    status, answer = upload(server, json.dumps(example).encode(), ctype="application/json")
    assert status == 200 and answer_schema.is_valid(answer), answer
    jpeg_json = to_json_body(b"\xff\xd8 not really a jpeg", top_n=3, probes=1_000_000)
    assert as_json.is_valid(json.loads(jpeg_json))
    health_schema = spec["paths"]["/health"]["get"]["responses"]["200"]["content"]
    status, health = request(server, "GET", "/health")
    assert validator(spec, health_schema["application/json"]["schema"]).is_valid(health)


def local_references(page: bytes) -> list[str]:
    """The URLs a page's tags and scripts load; every one must be on the service itself."""
    text = page.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', text) + re.findall(r"url: '([^']+)'", text)
    urls += re.findall(r'spec-url="([^"]+)"', text)
    assert urls and "://" not in text, text
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    return urls


def test_docs_pages_work_offline_and_without_the_token(guarded: QueryServer) -> None:
    """/docs and /redoc with a token set: open pages, their assets from the service (no CDN),
    a bearer scheme for Swagger's Authorize button, and the API still guarded."""
    status, spec = request(guarded, "GET", "/openapi.json")
    assert status == 200
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The token the server was started with (--token or VASRCH_TOKEN).",
    }
    guarded_operations = [
        spec["paths"]["/query"]["get"],
        spec["paths"]["/query"]["post"],
        spec["paths"]["/metrics"]["get"],
    ]
    assert all(op["security"] == [{"HTTPBearer": []}] for op in guarded_operations)
    assert all("401" in op["responses"] for op in guarded_operations)
    # open to all: /health (then only whether the service is up) and /identify
    assert not any("401" in spec["paths"][p]["get"]["responses"] for p in ("/health", "/identify"))

    loaded = set()
    for page in ("/docs", "/redoc"):
        status, headers, html = exchange(guarded, "GET", page)
        assert status == 200 and headers["content-type"].startswith("text/html"), page
        loaded.update(local_references(html))
    assert "/openapi.json" in loaded
    assets = loaded - {"/openapi.json"}
    assert {a.rsplit("/", 1)[1] for a in assets} == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "redoc.standalone.js",
        "favicon.png",
    }
    for asset in assets:
        status, headers, data = exchange(guarded, "GET", asset)
        kind = ASSET_TYPES["." + asset.rsplit(".", 1)[1]]
        assert status == 200 and kind in headers["content-type"] and len(data) > 1000, asset

    status, _, body = exchange(guarded, "GET", "/query?id=hat/hat_001.jpg")
    assert status == 401 and "bearer token" in json.loads(body)["error"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert exchange(guarded, "GET", "/query?id=hat/hat_001.jpg", headers=auth)[0] == 200
