"""The record a running query service leaves in its workspace, so that query flows find it.

`<workspace>/query-service.json` (readable by its owner only, and never served by the workspace
file server) holds the service's URL, instance id, process id, host name, start time, whether
requests need a token (never the token itself) and, for a service without a token, the key it
proves its identity with. One service of a workspace runs at a time: a second one is refused
while the first one's process lives. The service writes the record once it listens; when it
stops (by any signal it can catch, or an error), if the record is still its own, it puts back
the record it replaced when that one's service still runs, or removes it. A record left by a
killed service is harmless: a reader trusts a service only after it answered a challenge with
`identity_proof`, which needs the token (or the key) that the impostor does not hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vasrch.atomic_files import write_text_atomic
from vasrch.errors import BusyError
from vasrch.layout import WorkspaceLayout

log = logging.getLogger("vasrch.server")

PROOF_CONTEXT = "vasrch query service identity"
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "instance": str,
    "pid": int,
    "host": str,
    "token": bool,
    "started_at": str,
    "key": (str, type(None)),
}


class ServiceRunning(BusyError):
    """Another process of this machine still serves the workspace's queries."""


@dataclass(frozen=True)
class ServiceRecord:
    """Where a query service for this workspace listens, and how to recognise it."""

    url: str
    instance: str
    pid: int
    host: str
    token: bool
    started_at: str
    key: str | None = None  # the proof key of a service without a token

    def running(self) -> bool | None:
        """Whether its process still runs: True or False on this machine, None when the record
        comes from another host (its process cannot be seen from here)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def identity_proof(key: str, instance: str, port: int, nonce: str) -> str:
    """What GET /identify answers to `nonce`: an HMAC-SHA256 keyed with the service's token (or
    its record's key) over the instance id, the port the challenge reached and the nonce. It
    proves the service holds the key without showing it, and a relay on another port cannot
    pass the real service's answer off as its own."""
    message = f"{PROOF_CONTEXT}\n{instance}\n{port}\n{nonce}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a socket bound to host:port (a wildcard
    address is reached through loopback)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"http://[{address}]:{port}" if address.version == 6 else f"http://{address}:{port}"


def read_record(workspace: Path) -> ServiceRecord | None:
    """The workspace's service record, or None when there is none; ValueError when it is not
    one (unreadable, not JSON, wrong fields or types)."""
    path = WorkspaceLayout(Path(workspace)).query_service
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = ServiceRecord(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a query service record: {err}") from None
    wrong = [
        name
        for name, value in data.items()
        if not isinstance(value, FIELD_TYPES[name]) or (isinstance(value, bool) and name != "token")
    ]
    if wrong:
        raise ValueError(f"{path} is not a query service record: wrong type of {wrong}")
    return record


def check_unserved(workspace: Path) -> ServiceRecord | None:
    """The record a new service of `workspace` would replace: one of this process (services in
    threads) or of another host; None when there is none, or when it was left by a service
    that stopped without removing it. ServiceRunning when another process of this machine
    still serves the workspace."""
    try:
        record = read_record(workspace)
    except ValueError as err:
        log.warning("replacing it: %s", err)
        return None
    if record is None:
        return None
    running = record.running()
    if running is False:
        log.info("replacing the record of a query service that stopped (pid %d)", record.pid)
        return None
    if running and record.pid != os.getpid():
        raise ServiceRunning(
            f"a query service already serves {workspace} at {record.url} (pid {record.pid}, "
            f"since {record.started_at}), and query runs use it: stop it first (kill "
            f"{record.pid}), or serve another workspace"
        )
    return record


@contextmanager
def advertise(
    workspace: Path, url: str, instance: str, token: bool, key: str | None = None
) -> Iterator[ServiceRecord]:
    """Write the service record while the block runs (ServiceRunning when another process
    serves the workspace); then, if it is still this service's, put back the one it replaced
    if that service still runs, or remove it. A workspace that cannot be written to is logged:
    query flows then embed locally."""
    replaced = check_unserved(workspace)
    record = ServiceRecord(
        url=url,
        instance=instance,
        pid=os.getpid(),
        host=socket.gethostname(),
        token=token,
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        key=None if token else key,
    )
    path = WorkspaceLayout(Path(workspace)).query_service
    try:
        _write(path, record)
    except OSError as err:
        log.warning("cannot write %s (%s): query flows will not find this service", path, err)
    try:
        yield record
    finally:
        try:
            if read_record(workspace) == record:
                if replaced is not None and replaced.running() is not False:
                    _write(path, replaced)
                else:
                    path.unlink()
        except (OSError, ValueError) as err:
            log.warning("cannot remove or restore %s: %s", path, err)


def _write(path: Path, record: ServiceRecord) -> None:
    write_text_atomic(path, json.dumps(dataclasses.asdict(record), indent=2), private=True)
