"""The `query` flow: embed query images with a run's backbone, rank neighbours, write a page."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from prefect import flow
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.logging import get_run_logger
from pydantic import Field

from vasrch import runs
from vasrch.catalog import iter_image_files
from vasrch.config import FeaturesConfig, load_config
from vasrch.fileio import atomic_path, write_text_atomic
from vasrch.report import PAGE_CSS, tile, write_thumbnails
from vasrch.search import RESULT_COLUMNS, Searcher, embed_files, open_run

RESULTS_PARQUET = "results.parquet"
RESULTS_HTML = "results.html"
EMBED_CHUNK = 256  # query files decoded and embedded at a time (bounded memory)
ARTIFACT_ROWS = 500  # rows of the result table shown as a Prefect artifact


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
        raise ValueError(f"no images found in {images}; give image files or folders holding them")
    return files


def search_files(
    searcher: Searcher, files: list[Path], top_n: int, probes: int, features: FeaturesConfig
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """(result table: query, rank, image_id, path, score; [{query, reason}] of the files that
    could not be decoded), embedding at most EMBED_CHUNK files at a time."""
    backbone = searcher.backbone(features.batch_size, features.device)
    max_pixels = features.max_pixels
    tables, rejected = [], []
    for start in range(0, len(files), EMBED_CHUNK):
        chunk = files[start : start + EMBED_CHUNK]
        vectors, ok, bad = embed_files(chunk, backbone, max_pixels)
        rejected += [{"query": str(chunk[i]), "reason": reason} for i, reason in bad]
        if ok:
            result = searcher.search_vectors(vectors, top_n, probes)
            tables.append(searcher.to_table(result, [str(chunk[i]) for i in ok]))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=RESULT_COLUMNS)
    return table, rejected


def write_query_page(
    out_dir: Path, table: pd.DataFrame, rejected: list[dict[str, str]], title: str
) -> Path:
    """results.html in out_dir: each query's thumbnail, then its neighbours with rank and score;
    thumbnails are small JPEGs in out_dir/thumbs, linked relatively; rejected queries listed."""
    paths = dict(zip(table["image_id"], table["path"], strict=True))
    paths.update({q: q for q in table["query"]})
    # Query keys are absolute paths and image ids relative ones, so they never collide.
    thumbs = write_thumbnails([*table["query"], *table["image_id"]], paths, out_dir)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for query, rows in table.groupby("query", sort=False):
        parts.append(f'<div class="grid">{tile(Path(query).name, thumbs[query], "query", "query")}')
        parts.append('<span class="arrow">→</span>')
        for row in rows.itertuples(index=False):
            parts.append(tile(row.image_id, thumbs[row.image_id], f"#{row.rank} · {row.score:.3f}"))
        parts.append("</div>")
    if rejected:
        cells = "".join(
            f"<tr><td>{html.escape(r['query'])}</td><td>{html.escape(r['reason'])}</td></tr>"
            for r in rejected
        )
        parts.append(f"<h2>Queries that could not be read</h2><table>{cells}</table>")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    write_text_atomic(out_dir / RESULTS_HTML, page)
    return out_dir / RESULTS_HTML


@flow(name="query")
def query_flow(
    config_path: str,
    images: list[str],
    run: str | None = None,
    top_n: Annotated[int, Field(ge=1)] = 10,
    probes: Annotated[int, Field(ge=1)] | None = None,
) -> dict[str, Any]:
    """Rank the catalog images most similar to query images (files or folders) with a complete
    run (LATEST by default); write results.parquet and results.html under
    <workspace>/queries/<UTC time>-<hash>/. Images that cannot be decoded are listed, not fatal.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        images: Query image files or folders (searched recursively), as absolute paths on the
            machine that runs the flow.
        run: Run id to search; empty for LATEST.
        top_n: Neighbours per query.
        probes: Clusters searched per query; empty for the config's search.probes (auto: the
            probes calibrated when the run was trained).
    """
    cfg = load_config(config_path)
    logger = get_run_logger()
    files = query_files(images)
    searcher = open_run(cfg.workspace, run)
    if probes is None:
        configured = cfg.search.probes
        probes = configured if isinstance(configured, int) else searcher.default_probes
    table, rejected = search_files(searcher, files, top_n, probes, cfg.features)
    for r in rejected:
        logger.warning("query %s skipped: %s", r["query"], r["reason"])

    name = runs.new_run_id()
    final = cfg.workspace / "queries" / name
    staging = final.with_name(f"{runs.STAGING_PREFIX}{name}")
    staging.mkdir(parents=True)
    with atomic_path(staging / RESULTS_PARQUET) as tmp:
        table.to_parquet(tmp, index=False)
    title = f"{len(files) - len(rejected)} queries against run {searcher.run_id}"
    write_query_page(staging, table, rejected, title)
    os.rename(staging, final)

    create_table_artifact(
        key="query-results",
        table=table.drop(columns="path").head(ARTIFACT_ROWS).round({"score": 4}).to_dict("records")
        + [
            {
                "query": r["query"],
                "rank": None,
                "image_id": f"not read: {r['reason']}",
                "score": None,
            }
            for r in rejected
        ],
        description=f"Neighbours per query (run {searcher.run_id}, top {top_n}, {probes} probes); "
        "rows without a rank are queries that could not be read",
    )
    page = final / RESULTS_HTML
    create_link_artifact(
        key="query-page", link=page.as_uri(), link_text=f"{RESULTS_HTML} ({final.name})"
    )
    logger.info(
        "%d queries answered, %d rejected: %s", len(files) - len(rejected), len(rejected), page
    )
    return {
        "run_id": searcher.run_id,
        "out_dir": str(final),
        "queries": len(files) - len(rejected),
        "rejected": rejected,
        "top_n": top_n,
        "probes": probes,
    }
