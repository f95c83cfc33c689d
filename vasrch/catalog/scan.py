"""Scan a catalog folder: image ids, sha256 of the bytes, per-file problems, and the diff
against the last scan.

Rules of a scan (README, "Rejected images", shows what a user sees):

- Hidden entries (names starting with ".") are skipped; a file is an image by its extension.
- A symlink is followed when it resolves inside the catalog folder. One resolving outside is
  neither opened nor followed unless `follow_external_symlinks` is set: an image-named one is
  rejected, a folder one is a warning.
- Every image file that cannot be scanned becomes a rejection (image_id, path, reason) and the
  scan goes on: a name that is not valid UTF-8, a file that cannot be read, a path longer than
  the system allows, a broken or looping symlink, a FIFO or other special file, a file larger
  than `max_file_bytes` (never read). A folder that cannot be read, or that a symlink leads
  back to, is a warning. Ids and paths in reasons and warnings show bytes that are not UTF-8 as
  ``\\xNN`` escapes.
- A file's sha256 from the previous scan is reused only when its path, size, mtime, ctime,
  inode and device are all unchanged; anything else hashes the file again. ctime cannot be set
  by a user (every write or `touch` moves it), so rewriting a file and restoring its mtime
  does not fool the scan.
- A catalog in object storage (`root` an s3://, gs://, az:// URL) lists every image-named object
  under the prefix; remote photos (there, or URLs in a manifest) are hashed by
  vasrch.catalog.remote_scan, which downloads only what changed since the listing record.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vasrch.addresses import is_url
from vasrch.atomic_files import atomic_path
from vasrch.catalog.images import IMAGE_EXTENSIONS
from vasrch.catalog.object_store import list_objects
from vasrch.catalog.product_manifest import load_manifest
from vasrch.catalog.products import folder_products
from vasrch.catalog.remote_scan import (
    BytesSink,
    RemoteItem,
    hash_remote,
    read_record,
    same_record,
    write_record,
)
from vasrch.catalog.sources import Fetching
from vasrch.hashing import file_kind, open_regular, sha256_stream

STAT_COLUMNS = ["bytes", "mtime_ns", "ctime_ns", "inode", "device"]
CATALOG_COLUMNS = ["image_id", "path", "sha256", *STAT_COLUMNS]
SCAN_REJECTION_COLUMNS = ["image_id", "path", "row", "reason"]
STATUSES = ("new", "changed", "unchanged", "gone")
DEFAULT_MAX_FILE_BYTES = 50_000_000

_DTYPES = {
    "bytes": "int64",
    "mtime_ns": "int64",
    "ctime_ns": "int64",
    "inode": "uint64",  # st_ino and st_dev are unsigned 64-bit
    "device": "uint64",
}
StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class ScanOptions:
    """How a scan treats what it finds: the largest file it reads (None: no limit), whether
    symlinks resolving outside the catalog folder are followed, how remote photos are read and
    where the listing record of remote photos is kept (None: every one is downloaded)."""

    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
    follow_external_symlinks: bool = False
    manifest: Path | None = None  # products.csv / .parquet; None: every image is a product
    allow_absolute_paths: bool = False  # in the manifest
    fetching: Fetching = field(default_factory=Fetching)
    record: Path | None = None


@dataclass(frozen=True)
class Walk:
    """What a walk found: image files (id, path, stat), image files that cannot be scanned
    (id, path, reason) and warnings about folders."""

    files: list[tuple[str, str, os.stat_result]]
    rejected: list[tuple[str, str, str]]
    warnings: list[str]


@dataclass(frozen=True)
class Scan:
    """A scanned catalog: the table of hashed images (CATALOG_COLUMNS, then product_id and the
    product metadata columns), the images rejected by the scan (image_id, path, row: the
    manifest row or null, reason), warnings about folders left out, and the manifest row of
    each listed photo (empty without a manifest)."""

    table: pd.DataFrame
    rejected: pd.DataFrame
    warnings: list[str]
    row_of: dict[str, int] = field(default_factory=dict)
    manifest_name: str = ""

    def reason(self, image_id: str, reason: str) -> str:
        """Why a photo was rejected, naming its manifest row when it has one."""
        return row_reason(self.manifest_name, self.row_of.get(image_id), reason)


def row_reason(manifest_name: str, row: int | None, reason: str) -> str:
    """`reason`, after the manifest row it concerns when there is one ("products.csv row 7: ")."""
    return reason if row is None else f"{manifest_name} row {row}: {reason}"


def shown(name: str) -> str:
    """A file name or path as text that prints and stores anywhere: bytes that are not UTF-8
    (kept by Python as surrogate escapes) and NUL become ``\\xNN``."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00")


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def _stat_problem(path: str, linked: bool, err: OSError) -> str:
    """Why an entry could not be examined, in words."""
    if err.errno == errno.ENAMETOOLONG:
        return f"path longer than the system allows ({len(os.fsencode(path))} bytes)"
    if linked and err.errno == errno.ELOOP:
        return "symlink loop"
    if linked and err.errno == errno.ENOENT:
        return f"broken symlink: its target {shown(os.readlink(path))} does not exist"
    return f"cannot read: {_why(err)}"


def walk_catalog(root: Path, follow_external_symlinks: bool = False) -> Walk:
    """Image files under `root`, recursively, by name; hidden entries skipped; symlinks followed
    inside `root` (outside too with `follow_external_symlinks`); each folder walked once, real
    folders before those reached through symlinks. Nothing found is left out silently."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"catalog folder not found: {root}")
    top = os.path.realpath(root)
    files: list[tuple[str, str, os.stat_result]] = []
    rejected: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    seen: set[tuple[int, int]] = set()
    real_dirs: list[tuple[str, str]] = [(str(root), "")]
    linked_dirs: list[tuple[str, str]] = []
    while real_dirs or linked_dirs:
        folder, rel = real_dirs.pop() if real_dirs else linked_dirs.pop()
        label = shown(rel) if rel else str(root)
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                warnings.append(
                    f"{label}: leads to a folder already scanned (a symlink loop or a second "
                    "link to it); skipped"
                )
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            warnings.append(f"{label}: cannot read folder ({_why(err)}); its images are left out")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            image = _is_image_name(entry.name)
            linked = entry.is_symlink()
            if not (image or linked or entry.is_dir(follow_symlinks=False)):
                continue
            try:
                st = os.stat(entry.path)
            except OSError as err:
                problem = _stat_problem(entry.path, linked, err)
                if image:
                    rejected.append((child, entry.path, problem))
                else:
                    warnings.append(f"{shown(child)}: {problem}; skipped")
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if linked and not follow_external_symlinks:
                target = os.path.realpath(entry.path)
                if not _within(target, top):
                    problem = (
                        f"symlink to {shown(target)}, outside the catalog: not followed (set "
                        "catalog.follow_external_symlinks: true to follow it)"
                    )
                    if image:
                        rejected.append((child, entry.path, problem))
                    elif is_dir:
                        warnings.append(f"{shown(child)}: {problem}")
                    continue
            if is_dir:
                (linked_dirs if linked else real_dirs).append((entry.path, child))
            elif image and stat.S_ISREG(st.st_mode):
                files.append((child, entry.path, st))
            elif image:
                rejected.append(
                    (child, entry.path, f"not a regular file but a {file_kind(st.st_mode)}")
                )
    return Walk(sorted(files, key=lambda f: f[0]), sorted(rejected), warnings)


def walk_listed(root: Path, listed: pd.DataFrame, follow_external_symlinks: bool) -> Walk:
    """The photos a manifest lists (image_id, path) as a walk: each one that is missing, not a
    regular file, or a symlink leading out of `root` is rejected with its reason."""
    top = os.path.realpath(root)
    files: list[tuple[str, str, os.stat_result]] = []
    rejected: list[tuple[str, str, str]] = []
    real_folder = functools.lru_cache(maxsize=65_536)(os.path.realpath)

    def real_path(path: str) -> str:
        """realpath with one resolution per folder: only a symlinked file is resolved alone."""
        if os.path.islink(path):
            return os.path.realpath(path)
        folder, name = os.path.split(path)
        return os.path.join(real_folder(folder), name)

    for image_id, path in zip(listed["image_id"], listed["path"], strict=True):
        try:
            st = os.stat(path)
        except OSError as err:
            linked = os.path.islink(path)
            if err.errno == errno.ENOENT and not linked:
                problem = "listed in the manifest but not found"
            else:
                problem = _stat_problem(path, linked, err)
            rejected.append((image_id, path, problem))
            continue
        inside = os.path.isabs(image_id) or _within(real_path(path), top)
        if not (inside or follow_external_symlinks):
            rejected.append(
                (
                    image_id,
                    path,
                    "symlink leading outside the catalog: not followed (set "
                    "catalog.follow_external_symlinks: true to follow it)",
                )
            )
        elif stat.S_ISREG(st.st_mode):
            files.append((image_id, path, st))
        else:
            rejected.append((image_id, path, f"not a regular file but a {file_kind(st.st_mode)}"))
    return Walk(sorted(files, key=lambda f: f[0]), sorted(rejected), [])


def iter_image_files(root: Path) -> list[Path]:
    """Readable-looking image files under `root` (query folders): every symlink followed,
    loops cut, hidden entries and special files skipped; sorted."""
    return [Path(path) for _, path, _ in walk_catalog(root, follow_external_symlinks=True).files]


def _stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _known(previous: pd.DataFrame | None) -> dict[str, tuple[StatKey, str]]:
    """path -> (stat key, sha256) of a previous scan; empty when it lacks the stat columns
    (tables of older versions: every file is then hashed once)."""
    if previous is None or previous.empty or not set(CATALOG_COLUMNS) <= set(previous.columns):
        return {}
    table = previous[["path", *STAT_COLUMNS, "sha256"]]
    return {
        path: ((size, mtime, ctime, int(inode), int(device)), sha)
        for path, size, mtime, ctime, inode, device, sha in table.itertuples(index=False)
    }


def _too_large(size: int, limit: int) -> str:
    return f"file too large: {size} bytes > features.max_file_bytes {limit}; not read"


def _hash_file(
    path: str, st: os.stat_result, known: dict[str, tuple[StatKey, str]], max_bytes: int | None
) -> tuple[str, os.stat_result] | str:
    """(sha256, stat of the bytes hashed), or why the file is rejected; the previous sha256 is
    reused when the stat key is unchanged."""
    if max_bytes is not None and st.st_size > max_bytes:
        return _too_large(st.st_size, max_bytes)
    cached = known.get(path)
    if cached is not None and cached[0] == _stat_key(st):
        return cached[1], st
    try:
        with open_regular(path) as f:
            st = os.fstat(f.fileno())
            if max_bytes is not None and st.st_size > max_bytes:
                return _too_large(st.st_size, max_bytes)
            return sha256_stream(f), st
    except OSError as err:
        return f"cannot read file: {_why(err)}"


def _name_problem(image_id: str) -> str | None:
    try:
        image_id.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name is not valid UTF-8 ({os.fsencode(image_id)!r}); rename the file"
    return None


def _store_items(root: str, options: ScanOptions) -> list[RemoteItem]:
    """The image-named objects under the store prefix `root`: (key below it, URL, object)."""
    prefix = root.rstrip("/") + "/"
    items = []
    for obj in list_objects(root, options.fetching.storage_options, options.fetching.workers):
        key = obj.url[len(prefix) :] if obj.url.startswith(prefix) else obj.url
        if _is_image_name(key) and not any(part.startswith(".") for part in key.split("/")):
            items.append((key, obj.url, obj))
    return items


def _walk_manifest(
    root: str | Path, listed: pd.DataFrame, options: ScanOptions
) -> tuple[Walk, list[RemoteItem]]:
    """A manifest's photos: the local ones walked, the URLs to hash remotely."""
    remote = listed["path"].map(is_url).astype(bool)
    items: list[RemoteItem] = [
        (i, p, None)
        for i, p in listed.loc[remote, ["image_id", "path"]].itertuples(index=False, name=None)
    ]
    local = listed[~remote]
    if local.empty:
        return Walk([], [], []), items
    if is_url(str(root)):  # the local rows are absolute paths: no folder to stay inside
        root = Path(os.sep)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"catalog folder not found: {root}")
    return walk_listed(Path(root), local, options.follow_external_symlinks), items


def _scan_remote(
    items: list[RemoteItem], options: ScanOptions, on_bytes: BytesSink | None
) -> tuple[list, list]:
    """(catalog rows, rejections) of remote photos; the listing record is rewritten."""
    if not items:
        return [], []
    record = read_record(options.record)
    hashed, rejected = hash_remote(
        items, record, options.max_file_bytes, options.fetching, on_bytes
    )
    if options.record is not None and not same_record(record, hashed):
        write_record(options.record, hashed)
    rows = [(h.image_id, h.path, h.sha256, h.size, h.modified_ns, 0, 0, 0) for h in hashed]
    return rows, rejected


def scan_catalog(
    root: str | Path,
    previous: pd.DataFrame | None = None,
    options: ScanOptions | None = None,
    on_bytes: BytesSink | None = None,
) -> Scan:
    """Every image under `root` (a folder or an object store prefix; with `options.manifest`,
    every photo the manifest lists, local or URL): a table of image_id (POSIX path relative to
    root, or the URL a manifest gives), path, sha256, bytes, mtime_ns, ctime_ns, inode, device,
    product_id and the product metadata; the images that cannot be scanned, each with its
    reason; and warnings about folders left out. Hashes from `previous` are reused when path,
    size, mtime, ctime, inode and device are all unchanged (remote ones: see remote_scan).
    Without a manifest each image is its own product, its class folder its `category`. Each
    remote photo downloaded is handed to `on_bytes` (image_id, URL, sha256, bytes)."""
    options = options or ScanOptions()
    root = str(root) if is_url(str(root)) else Path(root).resolve()
    row_of: dict[str, int] = {}
    remote: list[RemoteItem] = []
    if options.manifest is None and isinstance(root, str):
        walk = Walk([], [], [])
        remote = _store_items(root, options)
    elif options.manifest is None:
        walk = walk_catalog(root, options.follow_external_symlinks)
    else:
        manifest = load_manifest(options.manifest, root, options.allow_absolute_paths)
        row_of = manifest.row_of
        walk, remote = _walk_manifest(root, manifest.rows, options)
    label = "" if options.manifest is None else Path(options.manifest).name

    def rejection(image_id: str, path: str, reason: str) -> tuple[str, str, int | None, str]:
        row = row_of.get(image_id)
        return shown(image_id), shown(path), row, row_reason(label, row, reason)

    known = _known(previous)
    rows, fetch_rejected = _scan_remote(remote, options, on_bytes)
    rejected = [rejection(*found) for found in [*walk.rejected, *fetch_rejected]]
    if options.manifest is not None:
        rejected += [
            (shown(i), shown(p), row, reason)
            for i, p, row, reason in manifest.rejected.itertuples(index=False, name=None)
        ]
    for image_id, path, st in walk.files:
        found = _name_problem(image_id) or _hash_file(path, st, known, options.max_file_bytes)
        if isinstance(found, str):
            rejected.append(rejection(image_id, path, found))
            continue
        digest, st = found
        rows.append((image_id, path, digest, *_stat_key(st)))
    table = pd.DataFrame(rows, columns=CATALOG_COLUMNS).astype(_DTYPES)
    table = table.sort_values("image_id", ignore_index=True)
    if options.manifest is None:
        products = folder_products(table["image_id"])
    else:
        products = manifest.rows.drop(columns="path").set_index("image_id")
    table = table.join(products, on="image_id")
    rejected.sort(key=lambda r: (r[0], r[1], r[2] or 0))
    rejections = pd.DataFrame(rejected, columns=SCAN_REJECTION_COLUMNS).astype({"row": "Int64"})
    return Scan(table, rejections, walk.warnings, row_of, label)


def diff_catalog(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """`current` plus the gone rows of `previous`, with a status: new, changed, unchanged, gone."""
    if previous is None or previous.empty:
        return current.assign(status="new")
    old = previous.set_index("image_id")["sha256"]
    before = current["image_id"].map(old)
    status = pd.Series("changed", index=current.index)
    status[before.isna()] = "new"
    status[before == current["sha256"]] = "unchanged"
    gone = previous[~previous["image_id"].isin(current["image_id"])]
    gone = gone.reindex(columns=CATALOG_COLUMNS)
    return pd.concat([current.assign(status=status), gone.assign(status="gone")], ignore_index=True)


def write_catalog(table: pd.DataFrame, path: Path) -> None:
    """Write the table to `path` as Parquet (without the index), atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
