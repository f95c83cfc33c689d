"""URLs for S3 requests (GET an object, one ListObjectsV2 page), presigned with AWS Signature
Version 4 in the calling thread with hmac/hashlib: no trip to fsspec's event loop and no botocore
machinery per request (a trip and botocore's presigning cost about 0.4 ms of CPU a photo).

What is signed with is exactly s3fs's: its client's endpoint URL, region, addressing style and
credentials, read in one trip to fsspec's loop per filesystem and kept (`Signer`); credentials
that refresh (instance roles, SSO) are read again every REREAD_S, static keys never. An
anonymous filesystem (`anon=True`) gets unsigned URLs. Where the client is configured in a way
this module does not reproduce exactly (another signature version, FIPS, dual-stack or
accelerated endpoints, an endpoint with a path, S3 Express buckets...), the URL is presigned by
s3fs's own client as before (`client_presigned`).

botocore presigns S3 with Signature Version 2 unless told otherwise; these URLs are Version 4,
which s3fs's client signs its own requests with, and which every AWS region accepts.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fsspec.asyn import sync

EXPIRES_S = 900
REREAD_S = 60.0
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_ALGORITHM = "AWS4-HMAC-SHA256"
_HOSTABLE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_GLOBAL_HOST = "s3.amazonaws.com"
_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")  # not aws-global: signed as us-east-1
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Signer:
    """How one filesystem's requests are addressed and signed: path-style requests go to
    `endpoint` (scheme://host[:port]); `virtual_host`, when set, is the host a bucket name that
    is a DNS label is put in front of; credentials are None for anonymous access; `reread_at`
    (time.monotonic) is when they are read again."""

    endpoint: str
    virtual_host: str | None
    custom_endpoint: bool
    region: str
    access_key: str | None = None
    secret_key: str | None = None
    token: str | None = None
    reread_at: float = float("inf")

    def bucket_url(self, bucket: str) -> str | None:
        """The URL of `bucket` (no trailing slash) as s3fs's client addresses it; None where the
        client's choice is not reproduced here."""
        if bucket.endswith("--x-s3") or not bucket:
            return None  # S3 Express directory buckets sign with session credentials
        if self.virtual_host is not None:
            if _HOSTABLE.fullmatch(bucket):
                scheme = self.endpoint.partition(":")[0]
                return f"{scheme}://{bucket}.{self.virtual_host}"
            if self.custom_endpoint and "." in bucket:
                return None  # botocore puts dotted names in the host on http, not on https
        return f"{self.endpoint}/{bucket}"


def _quote(value: str) -> str:
    return quote(value, safe="-_.~")


@functools.lru_cache(maxsize=64)
def signing_key(secret: str, date: str, region: str) -> bytes:
    """The SigV4 signing key of `secret` for one day (YYYYMMDD) and region, for S3."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _canonical_host(url: str) -> str:
    parts = urlsplit(url)
    if _DEFAULT_PORTS.get(parts.scheme) == parts.port:
        return parts.hostname or ""
    return parts.netloc


def presign(
    signer: Signer,
    url: str,
    query: Sequence[tuple[str, str]],
    when: dt.datetime,
    expires_s: int = EXPIRES_S,
) -> str:
    """`url` (scheme://host/path, the path already percent-encoded) with `query` and, unless the
    signer is anonymous, SigV4 query authentication for a GET at `when` (UTC)."""
    if signer.access_key is None or signer.secret_key is None:
        encoded = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
        return f"{url}?{encoded}" if encoded else url
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{signer.region}/s3/aws4_request"
    auth = [
        ("X-Amz-Algorithm", _ALGORITHM),
        ("X-Amz-Credential", f"{signer.access_key}/{scope}"),
        ("X-Amz-Date", stamp),
        ("X-Amz-Expires", str(expires_s)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if signer.token is not None:
        auth.append(("X-Amz-Security-Token", signer.token))
    pairs = [(_quote(k), _quote(v)) for k, v in (*query, *auth)]
    encoded = "&".join(f"{k}={v}" for k, v in pairs)
    canonical = "\n".join(
        (
            "GET",
            urlsplit(url).path or "/",
            "&".join(f"{k}={v}" for k, v in sorted(pairs)),
            f"host:{_canonical_host(url)}\n",
            "host",
            _UNSIGNED_PAYLOAD,
        )
    )
    to_sign = "\n".join((_ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()))
    key = signing_key(signer.secret_key, stamp[:8], signer.region)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{url}?{encoded}&X-Amz-Signature={signature}"


def object_url(signer: Signer, bucket: str, key: str, when: dt.datetime) -> str | None:
    """A presigned GET of `key` in `bucket`; None where s3fs's client must presign it."""
    base = signer.bucket_url(bucket)
    if base is None:
        return None
    return presign(signer, f"{base}/{quote(key, safe='/~')}", (), when)


def listing_url(
    signer: Signer, bucket: str, prefix: str, max_keys: int, token: str, when: dt.datetime
) -> str | None:
    """A presigned ListObjectsV2 page (keys URL-encoded in the answer, as botocore asks);
    None where s3fs's client must presign it."""
    base = signer.bucket_url(bucket)
    if base is None:
        return None
    query = [("list-type", "2"), ("prefix", prefix), ("max-keys", str(max_keys))]
    if token:
        query.append(("continuation-token", token))
    query.append(("encoding-type", "url"))
    return presign(signer, base if urlsplit(base).path else f"{base}/", query, when)


def _builtins(client: Any) -> dict[str, Any] | None:
    """The endpoint resolver's inputs of a botocore client (custom endpoint, path style...)."""
    try:
        found = client._ruleset_resolver._builtins
    except AttributeError:
        return None
    return {getattr(name, "value", name): value for name, value in found.items()}


def _layout(client: Any) -> tuple[str, str | None, bool] | None:
    """(path-style endpoint, virtual host, custom endpoint?) of a botocore S3 client, or None
    where its addressing is not reproduced here."""
    meta = client.meta
    builtins = _builtins(client)
    s3_config = meta.config.s3 or {}
    if builtins is None or set(s3_config) - {"addressing_style"} or not meta.region_name:
        return None
    if any(builtins.get(k) for k in ("AWS::UseFIPS", "AWS::UseDualStack", "AWS::S3::Accelerate")):
        return None
    path_style = builtins.get("AWS::S3::ForcePathStyle")
    custom = builtins.get("SDK::Endpoint")
    endpoint = urlsplit(custom or meta.endpoint_url)
    if endpoint.scheme not in _DEFAULT_PORTS or endpoint.path not in ("", "/") or endpoint.query:
        return None
    base = f"{endpoint.scheme}://{endpoint.netloc}"
    if path_style:
        return base, None, bool(custom)
    if custom:
        try:
            ipaddress.ip_address(endpoint.hostname or "")
        except ValueError:
            return base, endpoint.netloc, True
        return None  # botocore's virtual hosting on an IP address depends on the bucket name
    if meta.partition != "aws" or not _AWS_REGION.fullmatch(meta.region_name):
        return None
    # botocore presigns for the global endpoint unless virtual addressing is asked for
    host = endpoint.netloc if s3_config.get("addressing_style") == "virtual" else _GLOBAL_HOST
    return base, host, False


async def _read_signer(fs: Any) -> Signer | None:
    """The Signer of `fs`'s client, or None where s3fs's client must presign."""
    from botocore import UNSIGNED
    from botocore.credentials import RefreshableCredentials

    client = await fs.set_session()
    version = client.meta.config.signature_version
    layout = _layout(client)
    if layout is None or version not in (None, "s3v4", UNSIGNED):
        return None
    endpoint, virtual_host, custom = layout
    signer = Signer(endpoint, virtual_host, custom, client.meta.region_name)
    if version is UNSIGNED:
        return signer
    read_credentials = getattr(client, "_get_credentials", None)  # botocore's, not public
    credentials = None if read_credentials is None else read_credentials()
    if credentials is None:
        return None  # no way to read them here, or none: s3fs's client says so when it signs
    frozen = await credentials.get_frozen_credentials()
    refreshes = isinstance(credentials, RefreshableCredentials)
    return Signer(
        endpoint,
        virtual_host,
        custom,
        client.meta.region_name,
        frozen.access_key,
        frozen.secret_key,
        frozen.token,
        time.monotonic() + REREAD_S if refreshes else float("inf"),
    )


_signers: weakref.WeakKeyDictionary[Any, Signer | None] = weakref.WeakKeyDictionary()
_signers_lock = threading.Lock()


def signer_of(fs: Any) -> Signer | None:
    """`fs`'s Signer, read once (again when its credentials are due to be re-read); None where
    s3fs's client must presign."""
    with _signers_lock:
        signer = _signers.get(fs, ...)
        if signer is ... or (signer is not None and time.monotonic() >= signer.reread_at):
            signer = sync(fs.loop, _read_signer, fs)
            _signers[fs] = signer
        return signer


def client_presigned(fs: Any, operation: str, params: dict[str, Any]) -> str:
    """A URL for one `operation` (a boto3 client method name) presigned by s3fs's client, in one
    trip to fsspec's event loop (each trip costs a thread hand-off both ways)."""

    async def sign() -> str:
        client = await fs.set_session()
        return await client.generate_presigned_url(operation, Params=params, ExpiresIn=EXPIRES_S)

    return sync(fs.loop, sign)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def get_url(fs: Any, bucket: str, key: str) -> str:
    """A presigned GET of `key` in `bucket` through `fs`'s credentials and endpoint."""
    signer = signer_of(fs)
    url = object_url(signer, bucket, key, _now()) if signer else None
    return url or client_presigned(fs, "get_object", {"Bucket": bucket, "Key": key})


def list_url(fs: Any, bucket: str, prefix: str, max_keys: int, token: str) -> str:
    """A presigned ListObjectsV2 page of `prefix` in `bucket` through `fs`'s credentials."""
    signer = signer_of(fs)
    url = listing_url(signer, bucket, prefix, max_keys, token, _now()) if signer else None
    if url:
        return url
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
    if token:
        params["ContinuationToken"] = token
    return client_presigned(fs, "list_objects_v2", params)
