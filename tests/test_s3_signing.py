"""S3 URLs presigned in the calling thread (vasrch.catalog.s3_signing): the same URLs as
botocore's generate_presigned_url for the same credentials, time, region, endpoint and
addressing, s3fs's client presigning where a configuration is not reproduced, refreshable
credentials read again; and against a SeaweedFS that checks signatures: a catalog read and
listed (over several pages, with awkward keys), and a wrong secret refused photo by photo."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from tests.object_store import ObjectStore, upload_folder
from vasrch.catalog import s3_listing, s3_signing
from vasrch.catalog.downloads import FetchError
from vasrch.catalog.object_store import StoreError, read_object
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.catalog.sources import Fetching
from vasrch.errors import DataError

s3fs = pytest.importorskip("s3fs", reason="s3fs is missing: pip install 'vasrch[s3]'")

KEYS = (
    "photos/plain.jpg",
    "with space/and  two.jpg",
    "plus+tilde~/é ü 漢字.jpg",
    "query?x=1&y=2#frag;semi:colon@at,comma$=.jpg",
    "percent%20already%2F.jpg",
)
# signed as they are; SeaweedFS refuses to store them (its filer cleans paths)
UNSTORED_KEYS = ("//double//slash/.././dots.jpg",)
LAYOUTS = {  # name: (endpoint_url, addressing style, region, buckets)
    "custom endpoint, path style": (
        "http://127.0.0.1:8333",
        "path",
        "eu-west-1",
        ("shop", "my.shop", "Shop_1"),
    ),
    "custom endpoint, default": ("http://localhost:8333", None, "eu-west-1", ("shop", "my.shop")),
    "custom endpoint, auto, region auto": ("https://r2.example.com", "auto", "auto", ("shop",)),
    "custom endpoint, virtual hosts": (
        "https://store.example.com:9000",
        "virtual",
        "eu-west-1",
        ("shop",),
    ),
    "AWS, default": (None, None, "eu-west-1", ("shop", "my.shop")),
    "AWS, us-east-1": (None, None, "us-east-1", ("shop", "my.shop")),
    "AWS, path style": (None, "path", "eu-west-1", ("shop", "my.shop")),
    "AWS, virtual hosts": (None, "virtual", "eu-west-1", ("shop", "my.shop")),
}


def _filesystem(
    endpoint: str | None, style: str | None, token: str | None, region: str = "eu-west-1", **config
) -> object:
    client_kwargs = {"region_name": region}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if style:
        config["s3"] = {"addressing_style": style}
    return s3fs.S3FileSystem(
        key="AKIDEXAMPLE",
        secret="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        token=token,
        client_kwargs=client_kwargs,
        config_kwargs=config,
        skip_instance_cache=True,
    )


def _time(url: str) -> dt.datetime:
    """The signing time botocore put in a presigned URL."""
    stamp = parse_qs(urlsplit(url).query)["X-Amz-Date"][0]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE+token/with=odd chars"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_urls_equal_botocores_presigned_urls(layout: str, token: str | None) -> None:
    endpoint, style, region, buckets = LAYOUTS[layout]
    # s3fs's own client told to presign with SigV4: botocore's generate_presigned_url
    fs = _filesystem(endpoint, style, token, region, signature_version="s3v4")
    signer = s3_signing.signer_of(fs)
    assert signer is not None
    for bucket in buckets:
        for key in KEYS + UNSTORED_KEYS:
            expected = s3_signing.client_presigned(fs, "get_object", {"Bucket": bucket, "Key": key})
            assert s3_signing.object_url(signer, bucket, key, _time(expected)) == expected
        for prefix, page_token in [("", ""), ("with space/é+~?&", "1/token+with=odd/chars")]:
            params = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
            if page_token:
                params["ContinuationToken"] = page_token
            expected = s3_signing.client_presigned(fs, "list_objects_v2", params)
            when = _time(expected)
            assert (
                s3_signing.listing_url(signer, bucket, prefix, 1000, page_token, when) == expected
            )


def test_the_default_client_is_read_for_the_same_credentials_endpoint_and_region() -> None:
    """s3fs's client as configured by default presigns with Signature Version 2; the local
    signer takes its credentials, endpoint, region and addressing for Version 4 URLs."""
    fs = _filesystem("http://127.0.0.1:8333", None, "session-token")
    v4 = _filesystem("http://127.0.0.1:8333", None, "session-token", signature_version="s3v4")
    expected = s3_signing.client_presigned(v4, "get_object", {"Bucket": "shop", "Key": KEYS[3]})
    signer = s3_signing.signer_of(fs)
    assert signer is not None and signer.reread_at == float("inf")  # static keys
    assert s3_signing.object_url(signer, "shop", KEYS[3], _time(expected)) == expected
    assert "AWSAccessKeyId=" in s3_signing.client_presigned(
        fs, "get_object", {"Bucket": "shop", "Key": KEYS[3]}
    )


def test_anonymous_access_gets_unsigned_urls() -> None:
    fs = s3fs.S3FileSystem(
        anon=True, client_kwargs={"endpoint_url": "http://127.0.0.1:8333"}, skip_instance_cache=True
    )
    signer = s3_signing.signer_of(fs)
    assert signer is not None and signer.access_key is None
    for key in KEYS:
        expected = s3_signing.client_presigned(fs, "get_object", {"Bucket": "shop", "Key": key})
        assert "Signature" not in expected
        assert s3_signing.get_url(fs, "shop", key) == expected
    params = {"Bucket": "shop", "Prefix": "a b/", "MaxKeys": 7, "ContinuationToken": "t/+"}
    expected = s3_signing.client_presigned(fs, "list_objects_v2", params)
    assert s3_signing.list_url(fs, "shop", "a b/", 7, "t/+") == expected


@pytest.mark.parametrize(
    "config",
    [
        {"signature_version": "s3"},  # Signature Version 2 asked for
        {"s3": {"use_accelerate_endpoint": True}},
        {"s3": {"addressing_style": "path", "us_east_1_regional_endpoint": "regional"}},
        {"use_fips_endpoint": True},
    ],
)
def test_configurations_not_reproduced_are_presigned_by_s3fs(config: dict) -> None:
    fs = _filesystem(None, None, None, **config)
    assert s3_signing.signer_of(fs) is None
    url = s3_signing.get_url(fs, "shop", "a b.jpg")
    assert "a%20b.jpg" in url and "Signature" in url


@pytest.mark.parametrize("region", ["aws-global", "cn-north-1", "us-gov-west-1"])
def test_regions_signed_apart_are_presigned_by_s3fs(region: str) -> None:
    """aws-global is signed as us-east-1, China and GovCloud are partitions of their own."""
    assert s3_signing.signer_of(_filesystem(None, None, None, region)) is None


def test_bucket_names_not_reproduced_are_presigned_by_s3fs() -> None:
    fs = _filesystem("https://store.example.com", "virtual", None, signature_version="s3v4")
    signer = s3_signing.signer_of(fs)
    now = dt.datetime.now(dt.timezone.utc)
    assert s3_signing.object_url(signer, "my.shop", "k.jpg", now) is None
    assert s3_signing.object_url(signer, "shop--usw2-az1--x-s3", "k.jpg", now) is None
    assert s3_signing.get_url(fs, "my.shop", "k.jpg").startswith(
        "https://store.example.com/my.shop/k.jpg?X-Amz-Algorithm="
    )


def _refreshing_session(keys: Iterator[str]):
    """An aiobotocore session whose credentials expire in 5 minutes: botocore refreshes them on
    every read (its mandatory refresh window is 10 minutes), each time with the next key."""
    from aiobotocore.credentials import AioCredentialResolver, AioRefreshableCredentials
    from aiobotocore.session import AioSession

    async def metadata() -> dict[str, str]:
        expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
        return {
            "access_key": next(keys),
            "secret_key": "secret",
            "token": "token",
            "expiry_time": expiry.isoformat(),
        }

    class Provider:
        METHOD = CANONICAL_NAME = "vasrch-test"

        async def load(self) -> AioRefreshableCredentials:
            return AioRefreshableCredentials.create_from_metadata(
                await metadata(), metadata, self.METHOD
            )

    session = AioSession()
    session.register_component("credential_provider", AioCredentialResolver([Provider()]))
    return session


def test_refreshable_credentials_are_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = s3fs.S3FileSystem(
        session=_refreshing_session(f"KEY{i}" for i in range(100)),
        client_kwargs={"endpoint_url": "http://127.0.0.1:8333", "region_name": "eu-west-1"},
        skip_instance_cache=True,
    )
    monkeypatch.setattr(s3_signing, "REREAD_S", 0.0)  # due again at once
    first, second = s3_signing.signer_of(fs), s3_signing.signer_of(fs)
    assert first is not None and second is not None
    assert first.reread_at < float("inf") and first.access_key.startswith("KEY")
    assert second.access_key != first.access_key and second.token == "token"
    url = s3_signing.get_url(fs, "shop", "k.jpg")
    assert "X-Amz-Credential=KEY" in url and "X-Amz-Security-Token=token" in url


# Against a store that checks every request's signature


BUCKET = "signed"


@pytest.fixture(scope="module")
def checked_store(object_store: ObjectStore) -> ObjectStore:
    """The session's SeaweedFS (tests/object_store.py checks every request's signature against
    the test key's secret), with this module's bucket."""
    object_store.filesystem().mkdir(BUCKET)
    return object_store


@pytest.fixture(scope="module")
def signed_catalog(checked_store: ObjectStore, demo_catalog: Path) -> str:
    upload_folder(checked_store, demo_catalog, f"{BUCKET}/shop")
    return f"s3://{BUCKET}/shop"


def test_the_store_refuses_unsigned_requests(checked_store: ObjectStore) -> None:
    anonymous = s3fs.S3FileSystem(
        anon=True, client_kwargs={"endpoint_url": checked_store.endpoint}, skip_instance_cache=True
    )
    with pytest.raises(FetchError, match="HTTP 403"):
        s3_listing.find_s3(anonymous, BUCKET)


def test_a_catalog_is_read_and_listed_through_the_local_signer(
    checked_store: ObjectStore, signed_catalog: str, demo_catalog: Path, tmp_path: Path
) -> None:
    options = ScanOptions(fetching=Fetching(checked_store.storage_options))
    scan = scan_catalog(signed_catalog, options=options)
    local = scan_catalog(demo_catalog)
    assert list(scan.table["image_id"]) == list(local.table["image_id"])
    assert list(scan.table["sha256"]) == list(local.table["sha256"])
    assert scan.rejected.empty
    fs = s3fs.S3FileSystem(**checked_store.storage_options)  # the instance the scan used
    assert s3_signing.signer_of(fs) is not None  # so every URL was signed here


def test_listing_more_than_one_page_and_awkward_keys(
    checked_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = checked_store.filesystem()
    objects = {f"{BUCKET}/awkward/{key}": key.encode() for key in KEYS}
    fs.pipe(objects)
    monkeypatch.setattr(s3_listing, "PAGE_KEYS", 2)
    listed = {e["name"]: e["size"] for e in s3_listing.find_s3(fs, f"{BUCKET}/awkward")}
    fs.invalidate_cache()
    found = fs.find(f"{BUCKET}/awkward", detail=True)
    assert listed == {name: info["size"] for name, info in found.items()}
    assert len(listed) == len(KEYS)
    for name, data in objects.items():
        assert read_object(f"s3://{name}", None, checked_store.storage_options) == data


def test_a_wrong_secret_is_refused_photo_by_photo(
    checked_store: ObjectStore, signed_catalog: str, demo_catalog: Path, tmp_path: Path
) -> None:
    wrong = checked_store.options_with("not-the-secret")
    fs = s3fs.S3FileSystem(**wrong, skip_instance_cache=True)
    with pytest.raises(FetchError, match="HTTP 403 Forbidden"):  # the local signer's listing
        s3_listing.find_s3(fs, signed_catalog.removeprefix("s3://"))
    photo = f"{signed_catalog}/bag/bag_001.jpg"
    with pytest.raises(StoreError, match=r"cannot read \(FetchError: HTTP 403 Forbidden\)"):
        read_object(photo, None, wrong)
    with pytest.raises(DataError, match=r"s3://signed/shop: "):
        scan_catalog(signed_catalog, options=ScanOptions(fetching=Fetching(wrong)))
    manifest = tmp_path / "products.csv"
    images = [photo, str(demo_catalog / "hat/hat_002.jpg")]
    pd.DataFrame({"product_id": ["p0", "p1"], "image": images}).to_csv(manifest, index=False)
    options = ScanOptions(manifest=manifest, allow_absolute_paths=True, fetching=Fetching(wrong))
    scan = scan_catalog(demo_catalog, options=options)
    assert list(scan.table["product_id"]) == ["p1"]  # the run goes on
    assert list(scan.rejected["path"]) == [photo]
    assert "Forbidden" in scan.rejected["reason"].iloc[0]
