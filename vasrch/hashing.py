"""File bytes and their sha256: regular files only, bounded reads, checks against recorded hashes.

Every file vasrch hashes or reads whole goes through `open_regular`, which never blocks on a
FIFO or a device (it opens without waiting and refuses anything but a regular file), so a
special file planted in a catalog or a run folder cannot hang a scan, an extraction or a check.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from vasrch.errors import RunIntegrityError

CHUNK = 1 << 20


class NotRegularFileError(OSError):
    """A path that is a FIFO, a socket, a device or a folder where a regular file was expected."""


class TooLargeError(OSError):
    """A file larger than the limit it was read under."""


def file_kind(mode: int) -> str:
    """A short name for the type of file a stat mode describes (`FIFO`, `socket`, ...)."""
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "regular file" if stat.S_ISREG(mode) else "special file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading without ever blocking on a FIFO or device: the open does
    not wait, and anything but a regular file raises NotRegularFileError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(
                errno.EINVAL, f"not a regular file but a {file_kind(mode)}", str(path)
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_stream(f: BinaryIO, chunk: int = CHUNK) -> str:
    """Hex sha256 of what is left to read in `f`, read `chunk` bytes at a time."""
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    """Hex sha256 of a regular file's bytes, read `chunk` bytes at a time."""
    with open_regular(path) as f:
        return sha256_stream(f, chunk)


def read_bounded(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file; TooLargeError, before anything is read, when it holds more
    than `max_bytes` (and if it grows past them while being read)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise TooLargeError(errno.EFBIG, f"{size} bytes > limit {max_bytes}", str(path))
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLargeError(errno.EFBIG, f"more than {max_bytes} bytes", str(path))
    return data


def folder_hashes(folder: Path, skip: Iterable[Path] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` (but `skip` and symlinks, such as a page's links to
    catalog images, which are not the folder's to vouch for), keyed by POSIX path relative to it."""
    skipped = {Path(p) for p in skip}
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p not in skipped
    }


class IntegrityError(RunIntegrityError):
    """A recorded file that is unlisted, outside its folder, missing, unreadable or not the
    bytes its sha256 was recorded for."""


def _recorded_path(folder: Path, recorded: Mapping[str, str], rel: str) -> Path:
    if rel not in recorded:
        raise IntegrityError(f"artifact {rel} is not listed")
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise IntegrityError(f"artifact {rel!r} lies outside the folder")
    path = folder / rel
    if not path.is_file():
        raise IntegrityError(f"artifact {rel} is missing")
    return path


def _mismatch(rel: str) -> IntegrityError:
    return IntegrityError(f"artifact {rel} does not match its sha256")


def check_hashes(
    folder: Path, recorded: Mapping[str, str], names: Iterable[str] | None = None
) -> None:
    """Check that each file `names` lists (default: all of `recorded`, a map of POSIX paths
    relative to `folder` to sha256s) has its recorded sha256; IntegrityError names the first
    that does not."""
    for rel in recorded if names is None else names:
        path = _recorded_path(folder, recorded, rel)
        try:
            digest = sha256_file(path)
        except OSError as err:
            raise IntegrityError(f"artifact {rel} cannot be read ({err.strerror or err})") from None
        if digest != recorded[rel]:
            raise _mismatch(rel)


def read_verified(folder: Path, recorded: Mapping[str, str], rel: str) -> bytes:
    """The bytes of one recorded file, read once and checked against its recorded sha256 (so
    what is used is what was verified); IntegrityError when they differ."""
    path = _recorded_path(folder, recorded, rel)
    try:
        data = read_bounded(path)
    except OSError as err:
        raise IntegrityError(f"artifact {rel} cannot be read ({err.strerror or err})") from None
    if hashlib.sha256(data).hexdigest() != recorded[rel]:
        raise _mismatch(rel)
    return data
