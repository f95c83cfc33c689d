"""A query job: query files in, a ranked result table and a page out, in its own folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from threadpoolctl import threadpool_limits

from vasrch.atomic_files import atomic_path, finish_staging, start_staging
from vasrch.catalog.products import FilterSpec
from vasrch.catalog.scan import iter_image_files
from vasrch.catalog.sources import Fetching
from vasrch.config import FeaturesConfig
from vasrch.errors import UsageError
from vasrch.hashing import sha256_file
from vasrch.layout import QueryJobLayout, WorkspaceLayout
from vasrch.pages.query_page import write_query_page
from vasrch.search.parameters import SearchParams
from vasrch.search.results import RESULT_COLUMNS
from vasrch.workspace.runs import new_run_id
from vasrch.workspace.store import WorkspaceStore

if TYPE_CHECKING:
    from vasrch.search.searcher import Searcher

EMBED_CHUNK = 256  # query files decoded and embedded at a time (bounded memory)


@dataclass(frozen=True)
class QueryAnswers:
    """The result table (see search.searcher.Searcher.to_table), the queries not read, and how
    many queries were asked."""

    table: pd.DataFrame
    rejected: list[dict[str, str]]
    asked: int

    @property
    def answered(self) -> int:
        """Queries read and searched: those asked less those rejected."""
        return self.asked - len(self.rejected)


def query_files(images: list[str]) -> list[Path]:
    """Absolute query files: each entry is a file (kept as given) or a folder (its images,
    recursively, by the catalog's image extensions)."""
    files: list[Path] = []
    for entry in images:
        path = Path(entry).expanduser().resolve()
        if path.is_dir():
            files.extend(iter_image_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(
                f"query image or folder not found: {entry} (paths are read on the machine that "
                "runs the flow; give absolute paths when starting it from the Prefect UI)"
            )
    if not files:
        raise UsageError(f"no images found in {images}; give image files or folders holding them")
    return files


def query_names(names: Mapping[str, str] | None, files: list[Path]) -> dict[str, str]:
    """The names to show for query files (e.g. an upload's original file name, when it was
    saved under a generated one), by absolute path; a key that is not one of `files` (given as
    a path in the images, or inside a folder given) is refused."""
    known = {str(f) for f in files}
    shown: dict[str, str] = {}
    for given, name in (names or {}).items():
        path = str(Path(given).expanduser().resolve())
        if path not in known:
            raise UsageError(
                f"names: {given} is not one of the query images; key each name by "
                "the path of an image given (or found in a folder given)"
            )
        if not str(name).strip():
            raise UsageError(f"names: the name of {given} is empty")
        shown[path] = str(name)
    return shown


def search_files(
    searcher: Searcher,
    files: list[Path],
    params: SearchParams,
    features: FeaturesConfig,
    filters: FilterSpec | None = None,
    show_paths: bool = False,
) -> QueryAnswers:
    """Embed and search the files, at most EMBED_CHUNK at a time; files that cannot be decoded
    are listed with their reason, never fatal. A file that is a catalog photo (same bytes)
    leaves its own product out of its answers."""
    # Imported here: a job the query service answers never loads the model's libraries.
    from vasrch.search.searcher import embed_files

    searcher.allowed(filters)  # unknown filter columns fail before any embedding
    backbone = searcher.backbone(min(features.batch_size, len(files)), features.device)
    tables, rejected = [], []
    for start in range(0, len(files), EMBED_CHUNK):
        chunk = files[start : start + EMBED_CHUNK]
        vectors, ok, bad = embed_files(chunk, backbone, features.max_pixels)
        rejected += [{"query": str(chunk[i]), "reason": reason} for i, reason in bad]
        if ok:
            own = searcher.catalog_photo([sha256_file(chunk[i]) for i in ok])
            with threadpool_limits(1, "blas"):  # a few queries: threads only add hand-offs
                result = searcher.search_vectors(vectors, params.top_n, params.probes, own, filters)
            tables.append(searcher.to_table(result, [str(chunk[i]) for i in ok], show_paths))
    empty = pd.DataFrame(columns=RESULT_COLUMNS + (["path"] if show_paths else []))
    table = pd.concat(tables, ignore_index=True) if tables else empty
    return QueryAnswers(table, rejected, len(files))


def write_query_job(
    workspace: Path,
    answers: QueryAnswers,
    title: str,
    names: Mapping[str, str] | None = None,
    fetching: Fetching | None = None,
) -> QueryJobLayout:
    """results.parquet (without paths) and results.html (its thumbnails made from the paths of
    `answers`, searched with show_paths, photos at URLs read as `fetching` says; queries called
    by `names`, see query_names) in a new
    queries/<job>/ folder, written under a staging name and renamed when complete, as runs
    are."""
    job = WorkspaceLayout(Path(workspace)).query_job(new_run_id())
    staging = QueryJobLayout(start_staging(job.root))
    with atomic_path(staging.results) as tmp:
        answers.table.drop(columns="path", errors="ignore").to_parquet(tmp, index=False)
    write_query_page(staging.root, answers.table, answers.rejected, title, names, fetching)
    finish_staging(staging.root, job.root)
    return job


def upload_query_job(store: WorkspaceStore, workspace: Path, job: QueryJobLayout) -> str:
    """Copy a query job's folder to the same place on the workspace's store (photos the page
    links to as their bytes), its page last: a job whose page is on the store is whole. The
    page's URL."""
    files = sorted(p for p in job.root.rglob("*") if p.is_file())
    files.sort(key=lambda p: p == job.page)
    for path in files:
        store.upload(path.relative_to(workspace).as_posix(), path)
    return f"{store.url}/{job.page.relative_to(workspace).as_posix()}"
