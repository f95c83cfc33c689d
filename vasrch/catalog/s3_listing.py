"""Listing S3 with less CPU: ListObjectsV2 pages fetched through presigned URLs
(vasrch.catalog.s3_signing: s3fs's credentials, endpoint and region) over kept-alive connections
and parsed with ElementTree. botocore spends about 0.2 s of CPU parsing each page of 1,000 keys,
which made it the bottleneck of a rescan (benchmarks/BENCHMARKS.md, issue 24), where
ElementTree takes about 10 ms.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

from vasrch.catalog.downloads import FetchPolicy, fetch_url
from vasrch.catalog.s3_signing import list_url

PAGE_KEYS = 1000
TIMEOUT_S = 60.0


def _pages(fs: Any, bucket: str, prefix: str) -> Iterator[ET.Element]:
    """Every ListObjectsV2 page of `prefix` in `bucket`, following continuation tokens."""
    token = ""
    while True:
        url = list_url(fs, bucket, prefix, PAGE_KEYS, token)
        data = fetch_url(url, None, FetchPolicy(timeout_s=TIMEOUT_S)).data
        assert data is not None  # an unconditional request is never answered 304
        page = ET.fromstring(data)
        yield page
        ns = page.tag[: page.tag.index("}") + 1] if page.tag.startswith("{") else ""
        token = page.findtext(f"{ns}NextContinuationToken") or ""
        if page.findtext(f"{ns}IsTruncated") != "true" or not token:
            return


def find_s3(fs: Any, path: str) -> list[dict[str, Any]]:
    """The objects under `path` (bucket/prefix) as fsspec describes them (name, size, ETag,
    LastModified, type), listed page by page; FetchError (an OSError) when a page cannot be
    fetched."""
    bucket, _, key = path.partition("/")
    prefix = key.rstrip("/") + "/" if key else ""
    found = []
    for page in _pages(fs, bucket, prefix):
        ns = page.tag[: page.tag.index("}") + 1] if page.tag.startswith("{") else ""
        encoded = page.findtext(f"{ns}EncodingType") == "url"  # keys percent-encoded
        for entry in page.iter(f"{ns}Contents"):
            name = entry.findtext(f"{ns}Key") or ""
            name = unquote_plus(name) if encoded else name
            if name.endswith("/"):
                continue  # a folder marker object
            found.append(
                {
                    "name": f"{bucket}/{name}",
                    "size": int(entry.findtext(f"{ns}Size") or 0),
                    "ETag": entry.findtext(f"{ns}ETag") or "",
                    "LastModified": entry.findtext(f"{ns}LastModified") or "",
                    "type": "file",
                }
            )
    return found
