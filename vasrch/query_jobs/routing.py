"""Who answers a query job: the workspace's warm query service when it can, else this process.

The service (`vasrch query-server`, or the one `vasrch serve --with-query-service` keeps warm)
holds the run's model and index in memory, so a job it answers loads neither TensorFlow nor
scikit-learn here. Either way the job gets the same result table. The query flow and
`vasrch query` both route through here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from vasrch.catalog.products import FilterSpec
from vasrch.config import FeaturesConfig, SearchConfig
from vasrch.query_jobs.job import QueryAnswers, search_files
from vasrch.query_jobs.service_client import ServiceUnusable, find_service, search_served
from vasrch.search.parameters import SearchParams
from vasrch.service.settings import TOKEN_ENV


@dataclass(frozen=True)
class QuerySetup:
    """What a query job reads of a config: the workspace, its `search` section (None: the
    defaults and the run's calibration) and its `features` section (how images are decoded)."""

    workspace: Path
    search: SearchConfig | None = None
    features: FeaturesConfig = field(default_factory=FeaturesConfig)


@dataclass(frozen=True)
class Answered:
    """A job's answers, the run and parameters that gave them, and who embedded the images."""

    answers: QueryAnswers
    run_id: str
    params: SearchParams
    embedder: str


def answer_served(
    setup: QuerySetup,
    files: list[Path],
    run: str | None,
    top_n: int | None,
    probes: int | None,
    filters: FilterSpec | None = None,
) -> Answered:
    """Answers from the workspace's warm query service, each photo's path from the run's
    catalog; ServiceUnusable says why not."""
    service = find_service(setup.workspace, run, os.environ.get(TOKEN_ENV))
    params = service.params(setup.search, top_n, probes)
    answers = search_served(service, files, params, filters)
    return Answered(answers, service.run_id, params, f"the query service at {service.url}")


def answer_here(
    setup: QuerySetup,
    files: list[Path],
    run: str | None,
    top_n: int | None,
    probes: int | None,
    filters: FilterSpec | None = None,
) -> Answered:
    """Answers from the run's model, loaded in this process (with each photo's path, as the
    service's answers get them)."""
    # Imported here: a job the query service answers never loads TensorFlow or scikit-learn.
    from vasrch.search.searcher import open_run

    searcher = open_run(setup.workspace, run, search=setup.search)
    params = searcher.params(top_n, probes)
    answers = search_files(searcher, files, params, setup.features, filters, show_paths=True)
    return Answered(answers, searcher.run_id, params, "this process")


def answer_queries(
    setup: QuerySetup,
    files: list[Path],
    run: str | None,
    top_n: int | None,
    probes: int | None,
    log: logging.Logger | logging.LoggerAdapter,
    filters: FilterSpec | None = None,
) -> Answered:
    """The job's answers from the warm service when it can give them, else from this process;
    `log` says which, and why."""
    try:
        answered = answer_served(setup, files, run, top_n, probes, filters)
    except ServiceUnusable as why:
        log.info("embedding the %d images in this process: %s", len(files), why)
        return answer_here(setup, files, run, top_n, probes, filters)
    log.info("%d images answered by %s: no model loaded here", len(files), answered.embedder)
    return answered
