"""Shared: which network addresses and Host headers stay on this machine."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
HTTP_SCHEMES = frozenset({"http", "https"})
# Object stores by their URL schemes; a workspace may live in any of them (conditional writes).
S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs", "gcs")
AZURE_SCHEMES = ("az", "abfs", "abfss")
WORKSPACE_STORE_SCHEMES = (*S3_SCHEMES, *GCS_SCHEMES, *AZURE_SCHEMES)


def is_url(text: object) -> bool:
    """True when `text` is a string that starts like a URL (`s3://`, `https://`, ...); a
    one-letter scheme is a Windows drive, not a URL."""
    return isinstance(text, str) and _URL.match(text) is not None


def url_scheme(text: str) -> str:
    """The lower-case scheme of a URL ("s3", "https"); "" for a local path."""
    return text.split("://", 1)[0].lower() if is_url(text) else ""


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def is_loopback_host_header(value: str | None, port: int) -> bool:
    """True when an HTTP Host header names this machine by a loopback literal or name and the
    port it listens on: what a page on another site cannot send, even by DNS rebinding (its
    requests carry that site's name)."""
    if not value:
        return False
    try:
        parts = urlsplit(f"//{value}")
        host, given = parts.hostname, parts.port
    except ValueError:
        return False
    return host is not None and given in (None, port) and names_loopback(host)


def names_loopback(host: str) -> bool:
    """True when `host` (as a URL writes it, without brackets) is a loopback literal or name,
    read without asking a resolver."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
