"""Atomic writes: a temporary name in the same folder (file or folder), then a rename."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vasrch.layout import staging_path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):  # a symlink too, even one to nothing
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str, private: bool = False) -> None:
    """Write `text` as UTF-8 through a temporary file, so readers see all of it or none;
    `private`: readable by its owner only (mode 0600 from its creation)."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)


def start_staging(final: Path) -> Path:
    """Create the staging folder that becomes `final` in `finish_staging`."""
    staging = staging_path(final)
    staging.mkdir(parents=True)
    return staging


def finish_staging(staging: Path, final: Path) -> Path:
    """Publish a complete staging folder under its final name in one rename."""
    os.rename(staging, final)
    return final
