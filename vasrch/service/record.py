"""The record a running query service leaves in its workspace, so that query flows find it.

`<workspace>/query-service.json` holds the service's URL, instance id, process id, host name,
start time and whether requests need a token (never the token itself: the workspace file server
shows the workspace). The service writes it once it listens; when it stops, if the record is
still its own, it puts back the record it replaced (another service of the workspace may still
run) or removes it. A record left by a killed service is harmless: a reader trusts it only
after GET /health at its URL answers with the same instance id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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
from vasrch.layout import WorkspaceLayout

log = logging.getLogger("vasrch.server")


@dataclass(frozen=True)
class ServiceRecord:
    """Where a query service for this workspace listens, and how to recognise it."""

    url: str
    instance: str
    pid: int
    host: str
    token: bool
    started_at: str


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
    one (unreadable, not JSON, wrong fields)."""
    path = WorkspaceLayout(Path(workspace)).query_service
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServiceRecord(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a query service record: {err}") from None


@contextmanager
def advertise(workspace: Path, url: str, instance: str, token: bool) -> Iterator[ServiceRecord]:
    """Write the service record while the block runs; then, if it is still this service's, put
    back the one it replaced, or remove it. A workspace that cannot be written to is logged:
    query flows then embed locally."""
    record = ServiceRecord(
        url=url,
        instance=instance,
        pid=os.getpid(),
        host=socket.gethostname(),
        token=token,
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(),
    )
    path = WorkspaceLayout(Path(workspace)).query_service
    replaced = None
    try:
        replaced = path.read_text(encoding="utf-8") if path.is_file() else None
        write_text_atomic(path, json.dumps(dataclasses.asdict(record), indent=2))
    except OSError as err:
        log.warning("cannot write %s (%s): query flows will not find this service", path, err)
    try:
        yield record
    finally:
        try:
            if read_record(workspace) == record:
                if replaced is None:
                    path.unlink()
                else:
                    write_text_atomic(path, replaced)
        except (OSError, ValueError) as err:
            log.warning("cannot remove or restore %s: %s", path, err)
