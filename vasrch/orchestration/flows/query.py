"""The `query` flow: embed query images with a run's backbone, rank neighbours, write a page."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.logging import get_run_logger
from pydantic import Field

from vasrch.config import load_config
from vasrch.file_server import link_to
from vasrch.orchestration.naming import run_name
from vasrch.queries import answer_rows, query_files, search_files, write_query_job
from vasrch.search import open_run

ARTIFACT_ROWS = 500  # rows of the result table shown as a Prefect artifact


@flow(name="query", flow_run_name=run_name("query"))
def query_flow(
    config_path: str,
    images: list[str],
    run: str | None = None,
    top_n: Annotated[int, Field(ge=1)] | None = None,
    probes: Annotated[int, Field(ge=1)] | None = None,
    filters: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Rank the catalog products most similar to query images (files or folders) with a
    complete run (LATEST by default); write results.parquet and results.html under
    <workspace>/queries/<job>/. Images that cannot be decoded are listed, not fatal.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        images: Query image files or folders (searched recursively), as absolute paths on the
            machine that runs the flow.
        run: Run id to search; empty for LATEST.
        top_n: Neighbours per query; empty for the config's search.top_n.
        probes: Clusters searched per query; empty for the config's search.probes (auto: the
            probes calibrated when the run was trained).
        filters: Product metadata to match, e.g. {"category": ["shoes", "boots"]} (any of
            the values; every column given must match); empty for none.
    """
    cfg = load_config(config_path)
    logger = get_run_logger()
    files = query_files(images)
    searcher = open_run(cfg.workspace, run, search=cfg.search)
    params = searcher.params(top_n, probes)
    answers = search_files(searcher, files, params, cfg.features, filters, show_paths=True)
    for r in answers.rejected:
        logger.warning("query %s skipped: %s", r["query"], r["reason"])
    title = f"{answers.answered} queries against run {searcher.run_id}"
    job = write_query_job(cfg.workspace, answers, title)

    create_table_artifact(
        key="query-results",
        table=answer_rows(answers, ARTIFACT_ROWS),
        description=f"Neighbours per query (run {searcher.run_id}, top {params.top_n}, "
        f"{params.probes} probes); rows without a rank are queries that could not be read",
    )
    create_link_artifact(
        key="query-page", link=link_to(job.page), link_text=f"{job.page.name} ({job.root.name})"
    )
    logger.info(
        "%d queries answered, %d rejected: %s", answers.answered, len(answers.rejected), job.page
    )
    return {
        "run_id": searcher.run_id,
        "out_dir": str(job.root),
        "queries": answers.answered,
        "rejected": answers.rejected,
        "top_n": params.top_n,
        "probes": params.probes,
    }
