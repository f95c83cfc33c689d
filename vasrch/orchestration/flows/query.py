"""The `query` flow: rank the neighbours of query images, write a page, publish the answers.

When a warm query service runs for the workspace (`vasrch query-server`, or the one
`vasrch serve --with-query-service` keeps), the images go there and this process does no
TensorFlow work; otherwise it embeds them itself (vasrch.query_jobs.routing). Both give the same
results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import Field

from vasrch.config import load_config
from vasrch.orchestration.flows.extract import fetching
from vasrch.orchestration.naming import run_name
from vasrch.pages.file_server import link_to
from vasrch.pages.query_artifact import results_markdown
from vasrch.query_jobs.job import query_files, query_names, upload_query_job, write_query_job
from vasrch.query_jobs.routing import QuerySetup, answer_queries
from vasrch.search.parameters import SearchParams
from vasrch.search.run_products import check_run_filters
from vasrch.workspace.mirror import store_of
from vasrch.workspace.remote_runs import follow_or_why


@dataclass(frozen=True)
class QueryJob:
    """A query job: the run that answered, the job's folder, how many queries were answered,
    the rejected ones (query, reason), the top_n and probes used, and on a workspace in object
    storage the URL of the job's page there."""

    run_id: str
    out_dir: Path
    queries: int
    rejected: tuple[dict[str, str], ...]
    params: SearchParams
    stored_page: str | None = None


@flow(name="query", flow_run_name=run_name("query"))
def query_flow(
    config_path: str,
    images: list[str],
    run: str | None = None,
    top_n: Annotated[int, Field(ge=1)] | None = None,
    probes: Annotated[int, Field(ge=1)] | None = None,
    filters: dict[str, list[str]] | None = None,
    names: dict[str, str] | None = None,
) -> QueryJob:
    """Rank the catalog products most similar to query images (files or folders) with a
    complete run (LATEST by default); write results.parquet and results.html under
    <workspace>/queries/<job>/. Images that cannot be decoded are listed, not fatal. On a
    workspace in object storage the run is read from the store (through the local cache) and
    the job's folder is copied there.

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
        names: What to call query images on the page and the artifact, by their path, e.g.
            {"/srv/uploads/3f2a....jpg": "red sneaker.jpg"} for an upload saved under a
            generated name; empty: their file names.
    """
    cfg = load_config(config_path)
    logger = get_run_logger()
    files = query_files(images)
    shown = query_names(names, files)
    store = store_of(cfg)
    problem = None if store is None else follow_or_why(store, cfg.workspace, run)
    if problem is not None:
        logger.warning("using the cached runs in %s: %s", cfg.workspace, problem)
    check_run_filters(cfg.workspace, run, filters)  # before any image is sent or embedded
    setup = QuerySetup(cfg.workspace, cfg.search, cfg.features)
    answered = answer_queries(setup, files, run, top_n, probes, logger, filters)
    answers, run_id, params = answered.answers, answered.run_id, answered.params
    for r in answers.rejected:
        logger.warning("query %s skipped: %s", r["query"], r["reason"])
    title = f"{answers.answered} queries against run {run_id}"
    job = write_query_job(cfg.workspace, answers, title, shown, fetching(cfg))
    stored = None if store is None else upload_query_job(store, cfg.workspace, job)

    heading = f"**{title}** · top {params.top_n} · {params.probes} probes"
    heading += f" · embedded by {answered.embedder}"
    create_markdown_artifact(
        key="query-results",
        markdown=results_markdown(job, answers.table, answers.rejected, heading, link_to, shown),
        description=f"Top results per query (run {run_id}); each rank opens the photo",
    )
    create_link_artifact(
        key="query-page", link=link_to(job.page), link_text=f"{job.page.name} ({job.root.name})"
    )
    logger.info(
        "%d queries answered, %d rejected: %s", answers.answered, len(answers.rejected), job.page
    )
    if stored is not None:
        logger.info("the job's page on the workspace's store: %s", stored)
    return QueryJob(
        run_id=run_id,
        out_dir=job.root,
        queries=answers.answered,
        rejected=tuple(answers.rejected),
        params=params,
        stored_page=stored,
    )
