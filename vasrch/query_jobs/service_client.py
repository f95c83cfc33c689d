"""A query job's side of the warm query service: find the service of a workspace, send it the
query images, and turn its answers into the job's result table.

Nothing here imports TensorFlow, scikit-learn or the web framework: a query flow that the
service answers stays a light process. Anything that makes the service unusable for a job
raises ServiceUnusable with the reason, and the caller embeds the images itself.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vasrch.catalog.products import FilterSpec
from vasrch.config import SearchConfig
from vasrch.hashing import read_bounded
from vasrch.layout import RunLayout
from vasrch.query_jobs.job import QueryAnswers
from vasrch.search.parameters import SearchParams, resolve_search_params
from vasrch.search.results import table_from_answers
from vasrch.service.record import read_record
from vasrch.service.settings import TOKEN_ENV
from vasrch.workspace.runs import RunError, latest_run_id, read_manifest, resolve_run

HEALTH_TIMEOUT_S = 2.0
QUERY_TIMEOUT_S = 60.0
# Requests in flight at once: the service decodes two images at a time by default, and a third
# request hides the round trip.
CONNECTIONS = 3
UNUSABLE_IMAGE = "not a usable image: "


class ServiceUnusable(Exception):
    """Why the warm query service cannot answer this job (the job then embeds locally)."""


@dataclass(frozen=True)
class WarmService:
    """A query service that answered /health as the workspace's record says it should."""

    workspace: Path
    url: str
    token: str | None
    health: dict[str, Any]

    @property
    def run_id(self) -> str:
        """The run the service serves."""
        return str(self.health["run_id"])

    def params(self, search: SearchConfig, top_n: int | None, probes: int | None) -> SearchParams:
        """top_n and probes by the one rule (vasrch.search.parameters), with the served run's size
        and calibration: what a local search of the same run would use."""
        folder = resolve_run(self.workspace, self.run_id)
        return resolve_search_params(
            k=int(self.health["k"]),
            n=int(self.health["images"]),
            top_n=top_n,
            probes=probes,
            configured=search,
            calibrated=read_manifest(folder, verify=False).calibration.probes,
        )

    def paths(self) -> pd.Series:
        """image_id -> path of the served run's photos (its verified catalog table)."""
        run = RunLayout(resolve_run(self.workspace, self.run_id))
        catalog = pd.read_parquet(run.catalog, columns=["image_id", "path"])
        return catalog.set_index("image_id")["path"]

    def query(
        self, path: Path, params: SearchParams, filters: FilterSpec | None = None
    ) -> dict[str, Any] | str:
        """The service's answer for one image file, or the reason the image is not usable;
        ServiceUnusable for any other refusal or failure."""
        try:
            data = read_bounded(path)
        except OSError as err:
            return f"cannot read file: {err.strerror or err}"
        options = {"top_n": params.top_n, "probes": params.probes}
        for column, values in (filters or {}).items():
            values = [values] if isinstance(values, str) else values
            options[f"filter.{column}"] = ",".join(values)
        query = f"/query?{urllib.parse.urlencode(options)}"
        try:
            return _call(self.url, self.token, query, data, QUERY_TIMEOUT_S)
        except urllib.error.HTTPError as err:
            reason = _error_text(err)
            if err.code == 400 and reason.startswith(UNUSABLE_IMAGE):
                return reason.removeprefix(UNUSABLE_IMAGE)
            raise ServiceUnusable(f"{self.url} answered {err.code} for {path}: {reason}") from None
        except (OSError, ValueError) as err:
            raise ServiceUnusable(f"{self.url} failed on {path}: {err}") from None


def _call(
    url: str, token: str | None, path: str, data: bytes | None, timeout: float
) -> dict[str, Any]:
    """GET (no data) or POST `data` as a raw image to url + path; the answer's JSON."""
    headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return err.reason


def find_service(workspace: Path, run: str | None, token: str | None) -> WarmService:
    """The warm service of `workspace`, checked to serve `run` (LATEST when None); a job sends
    it every image, whatever their number (with requests in flight, decoding overlaps
    inference there, which outpaces a job's own batched embedding on a CPU: see
    benchmarks/BENCHMARKS.md); ServiceUnusable says why not."""
    try:
        record = read_record(workspace)
    except ValueError as err:
        raise ServiceUnusable(str(err)) from None
    if record is None:
        raise ServiceUnusable("no query service is running for this workspace")
    if record.token and not token:
        raise ServiceUnusable(
            f"the query service at {record.url} needs a token: set {TOKEN_ENV} for the runs"
        )
    try:
        health = _call(record.url, None, "/health", None, HEALTH_TIMEOUT_S)
    except (OSError, ValueError) as err:
        raise ServiceUnusable(f"stale record: {record.url} does not answer ({err})") from None
    if health.get("instance") != record.instance:
        raise ServiceUnusable(f"stale record: {record.url} is another service now")
    service = WarmService(Path(workspace), record.url, token, health)
    try:
        wanted = resolve_run(workspace, run).name if run else latest_run_id(workspace)
    except RunError as err:
        raise ServiceUnusable(str(err)) from None
    if wanted != service.run_id:
        raise ServiceUnusable(f"the service serves run {service.run_id}, this job wants {wanted}")
    return service


def search_served(
    service: WarmService,
    files: list[Path],
    params: SearchParams,
    filters: FilterSpec | None = None,
) -> QueryAnswers:
    """Send each file to the service (CONNECTIONS at a time) and gather the answers in file
    order; ServiceUnusable when it fails (the files not sent yet are not sent) or moves to
    another run during the job."""
    with ThreadPoolExecutor(min(CONNECTIONS, len(files))) as pool:
        futures = [pool.submit(service.query, path, params, filters) for path in files]
        try:
            answers = [future.result() for future in futures]
        except ServiceUnusable:
            pool.shutdown(cancel_futures=True)
            raise
    found = [(str(p), a) for p, a in zip(files, answers, strict=True) if isinstance(a, dict)]
    rejected = [
        {"query": str(p), "reason": a}
        for p, a in zip(files, answers, strict=True)
        if isinstance(a, str)
    ]
    moved = {a["run_id"] for _, a in found} - {service.run_id}
    if moved:
        raise ServiceUnusable(f"the service moved to run {moved.pop()} during the job")
    return QueryAnswers(table_from_answers(found, service.paths()), rejected, len(files))
