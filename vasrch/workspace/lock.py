"""One writer per workspace: an advisory lock that train, nightly, bulk, extract and run
maintenance take, released by the kernel if its holder dies."""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vasrch.errors import BusyError

LOCK_NAME = ".lock"
POLL_S = 0.5


class WorkspaceBusy(BusyError):
    """Another writer held the workspace for longer than the caller would wait."""


def holder(workspace: Path) -> str:
    """Who holds (or last held) the workspace lock, as the lock file records it."""
    try:
        fd = os.open(Path(workspace) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, encoding="utf-8") as file:
            info = json.loads(file.read(4096))
    except (OSError, ValueError):
        return "an unknown process"
    return (
        f"{info.get('command', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('since', '?')})"
    )


@contextmanager
def workspace_lock(workspace: Path, command: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the workspace's writer lock for the block, waiting up to `timeout_s` for another
    writer to finish, then failing with a message that names it. The lock is an flock on
    <workspace>/.lock: a holder killed with -9 releases it with its file descriptors, so a
    stale lock never blocks anyone."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    try:
        # O_NOFOLLOW: a planted .lock symlink must not make the lock overwrite its target.
        fd = os.open(workspace / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise WorkspaceBusy(
            f"{workspace / LOCK_NAME} is a symbolic link; vasrch never follows it. Remove it "
            "(rm, not the file it points to) and try again"
        ) from None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusy(
                        f"workspace {workspace} is in use by {holder(workspace)}; waited "
                        f"{timeout_s:g} s (runs.lock_timeout_s). Try again when it has finished"
                    ) from None
                time.sleep(POLL_S)
        info = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)
