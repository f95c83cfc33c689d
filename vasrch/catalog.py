"""Scan a catalog folder: image ids, sha256 of the bytes, and the diff against the last scan."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from vasrch.fileio import atomic_path
from vasrch.images import IMAGE_EXTENSIONS

CATALOG_COLUMNS = ["image_id", "path", "sha256", "bytes", "mtime_ns"]
STATUSES = ("new", "changed", "unchanged", "gone")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes, read `chunk` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def iter_image_files(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted; hidden entries skipped, symlink loops cut."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"catalog folder not found: {root}")
    seen_dirs: set[tuple[int, int]] = set()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath, name)
            if _is_image_name(name) and p.is_file():
                found.append(p)
    return sorted(found)


def scan_catalog(root: str | Path, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table of every image under `root`: image_id (POSIX path relative to root), path, sha256,
    bytes, mtime_ns. Hashes from `previous` are reused when path, size and mtime are unchanged."""
    root = Path(root).resolve()
    known: dict[str, tuple[int, int, str]] = {}
    if previous is not None and len(previous):
        known = {
            p: (b, m, s)
            for p, b, m, s in previous[["path", "bytes", "mtime_ns", "sha256"]].itertuples(
                index=False
            )
        }
    rows = []
    for p in iter_image_files(root):
        st = p.stat()
        path = str(p)
        cached = known.get(path)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            digest = cached[2]
        else:
            digest = sha256_file(p)
        rows.append((p.relative_to(root).as_posix(), path, digest, st.st_size, st.st_mtime_ns))
    return pd.DataFrame(rows, columns=CATALOG_COLUMNS).astype(
        {"bytes": "int64", "mtime_ns": "int64"}
    )


def diff_catalog(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """`current` plus the gone rows of `previous`, with a status: new, changed, unchanged, gone."""
    if previous is None or previous.empty:
        return current.assign(status="new")
    old = previous.set_index("image_id")["sha256"]
    before = current["image_id"].map(old)
    status = pd.Series("changed", index=current.index)
    status[before.isna()] = "new"
    status[before == current["sha256"]] = "unchanged"
    gone = previous[~previous["image_id"].isin(current["image_id"])][CATALOG_COLUMNS]
    return pd.concat([current.assign(status=status), gone.assign(status="gone")], ignore_index=True)


def write_catalog(table: pd.DataFrame, path: Path) -> None:
    """Write the table to `path` as Parquet (without the index), atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
