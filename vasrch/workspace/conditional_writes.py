"""Conditional writes on each object store: create-once and compare-and-swap on the object's
version, through the fsspec filesystem's own client.

- S3 (s3fs): `If-None-Match: *` and `If-Match: <ETag>` on PutObject, passed to botocore as given;
  the version is the ETag.
- GCS (gcsfs): `ifGenerationMatch=0` and `ifGenerationMatch=<generation>` on a multipart upload
  of the JSON API, sent through gcsfs's session (its credentials and endpoint,
  STORAGE_EMULATOR_HOST included); the version is the generation.
- Azure Blob (adlfs): `If-None-Match: *` (upload_blob without overwrite) and `If-Match: <ETag>`
  (azure-storage-blob's etag with MatchConditions.IfNotModified); the version is the ETag.

A write whose condition fails raises what the client raises (a 412 answer, FileExistsError);
the caller tells it from other failures (vasrch.workspace.store.is_conflict).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vasrch.addresses import AZURE_SCHEMES as AZURE
from vasrch.addresses import GCS_SCHEMES as GCS
from vasrch.addresses import S3_SCHEMES as S3

_BOUNDARY = "==vasrch=="


def version(protocol: str, info: Mapping[str, Any]) -> str:
    """The version a compare-and-swap names, from fsspec's description of an object."""
    if protocol in GCS:
        return str(info.get("generation") or "")
    return str(info.get("ETag") or info.get("etag") or "")


def write_if(fs: Any, protocol: str, path: str, data: bytes, expected: str | None) -> str:
    """Write `data` to `path` only if the object does not exist (`expected` None) or still has
    the version `expected`; the new version."""
    if protocol in S3:
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        return str((fs.pipe_file(path, data, **condition) or {}).get("ETag", ""))
    if protocol in GCS:
        return _gcs_upload(fs, path, data, "0" if expected is None else expected)
    if protocol in AZURE:
        if expected is None:
            return str(fs.pipe_file(path, data, mode="create")["etag"])
        from azure.core import MatchConditions

        answer = fs.pipe_file(
            path, data, etag=expected, match_condition=MatchConditions.IfNotModified
        )
        return str(answer["etag"])
    raise ValueError(f"no conditional writes for {protocol}://")


def _gcs_upload(fs: Any, path: str, data: bytes, generation: str) -> str:
    """A multipart upload (what gcsfs's own writes use) with ifGenerationMatch; the new
    generation."""
    bucket, key, _ = fs.split_path(path)
    head = (
        f"--{_BOUNDARY}\nContent-Type: application/json; charset=UTF-8\n\n"
        f"{json.dumps({'name': key})}\n--{_BOUNDARY}\n"
        "Content-Type: application/octet-stream\n\n"
    )
    answer = fs.call(
        "POST",
        f"{fs._location}/upload/storage/v1/b/{bucket}/o",
        uploadType="multipart",
        ifGenerationMatch=generation,
        headers={"Content-Type": f'multipart/related; boundary="{_BOUNDARY}"'},
        data=head.encode() + data + f"\n--{_BOUNDARY}--".encode(),
        json_out=True,
    )
    fs.invalidate_cache(path)
    return str(answer["generation"])
