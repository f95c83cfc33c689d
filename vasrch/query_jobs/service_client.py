"""A query job's side of the warm query service: find the service of a workspace, make sure it
is the one its record names, send it the query images, and turn its checked answers into the
job's result table.

Trust: the record (`<workspace>/query-service.json`) is only a pointer. Its URL must be http(s)
to a loopback address. The service must answer GET /identify with an HMAC of a fresh nonce keyed
with the token (or, for a service without one, with the key in the record) before it gets the
token or any image; the token goes only to a service whose record says it needs one. Answers
are checked (fields, types, at most top_n results, image ids of the served run) and never name
a file to read: photo paths come from the run's own catalog, the query is the file sent.

Nothing here imports TensorFlow, scikit-learn or the web framework: a query flow that the
service answers stays a light process. Anything that makes the service unusable for a job
raises ServiceUnusable with the reason, and the caller embeds the images itself.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import secrets
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from vasrch.addresses import names_loopback
from vasrch.catalog.products import FilterSpec
from vasrch.config import SearchConfig
from vasrch.hashing import read_bounded
from vasrch.layout import RunLayout, WorkspaceLayout
from vasrch.query_jobs.job import QueryAnswers
from vasrch.search.parameters import SearchParams, resolve_search_params
from vasrch.search.results import table_from_answers
from vasrch.service.record import ServiceRecord, identity_proof, read_record
from vasrch.service.settings import TOKEN_ENV
from vasrch.workspace.runs import RunError, latest_run_id, read_manifest, resolve_run

HEALTH_TIMEOUT_S = 2.0
QUERY_TIMEOUT_S = 60.0
# Requests in flight at once: the service decodes two images at a time by default, and a third
# request hides the round trip.
CONNECTIONS = 3
UNUSABLE_IMAGE = "not a usable image: "
HEALTH_FIELDS = {"run_id": str, "k": int, "images": int}
RESULT_FIELDS = {"rank": int, "product_id": str, "score": (int, float), "image_id": str}
# Metadata values an answer may carry: what a catalog table holds.
SCALARS = (str, int, float, bool, type(None))


class ServiceUnusable(Exception):
    """Why the warm query service cannot answer this job (the job then embeds locally)."""


@dataclass(frozen=True)
class WarmService:
    """A query service that proved it is the one the workspace's record names; `token` is
    what its requests carry (None when the record says it needs none)."""

    workspace: Path
    url: str
    token: str | None
    health: dict[str, Any]

    @property
    def run_id(self) -> str:
        """The run the service serves."""
        return str(self.health["run_id"])

    def params(
        self, search: SearchConfig | None, top_n: int | None, probes: int | None
    ) -> SearchParams:
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
        """The service's checked answer for one image file (its run id and results), or the
        reason the image is not usable; ServiceUnusable for any other refusal or failure."""
        try:
            data = read_bounded(path)
        except OSError as err:
            return f"cannot read file: {err.strerror or err}"
        body = {
            "image_base64": base64.b64encode(data).decode("ascii"),
            "top_n": params.top_n,
            "probes": params.probes,
        }
        if filters:
            body["filters"] = {k: [v] if isinstance(v, str) else [*v] for k, v in filters.items()}
        try:
            answer = _call(self.url, self.token, "/query", json.dumps(body).encode())
        except urllib.error.HTTPError as err:
            reason = _error_text(err)
            if err.code == 400 and reason.startswith(UNUSABLE_IMAGE):
                return reason.removeprefix(UNUSABLE_IMAGE)
            raise ServiceUnusable(f"{self.url} answered {err.code} for {path}: {reason}") from None
        except (OSError, ValueError) as err:
            raise ServiceUnusable(f"{self.url} failed on {path}: {err}") from None
        return _checked_answer(answer, params.top_n, self.url)


def _call(
    url: str, token: str | None, path: str, body: bytes | None, timeout: float = QUERY_TIMEOUT_S
) -> Any:
    """GET (no body) or POST `body` as JSON to url + path; the answer's JSON."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}{path}", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return err.reason


def _checked_answer(answer: Any, top_n: int, url: str) -> dict[str, Any]:
    """The run id and result rows of a /query answer (without the `query` and `path` the
    service may send: the job names its queries and reads paths from the run's catalog);
    ServiceUnusable when the answer is not one."""
    problem = None
    if not isinstance(answer, dict) or not isinstance(answer.get("run_id"), str):
        problem = "no run_id"
    elif not isinstance(answer.get("results"), list) or len(answer["results"]) > top_n:
        problem = f"no list of at most {top_n} results"
    else:
        problem = next(filter(None, map(_row_problem, answer["results"])), None)
    if problem:
        raise ServiceUnusable(f"{url} gave an answer that is not a query answer: {problem}")
    rows = [{k: v for k, v in r.items() if k not in ("query", "path")} for r in answer["results"]]
    return {"run_id": answer["run_id"], "results": rows}


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "a result is not an object"
    for name, kind in RESULT_FIELDS.items():
        if not isinstance(row.get(name), kind) or isinstance(row[name], bool):
            return f"a result's {name} is missing or not a {kind}"
    if not math.isfinite(row["score"]):
        return "a result's score is not a finite number"
    if not all(isinstance(v, SCALARS) for v in row.values()):
        return "a result's metadata value is not a string, number or boolean"
    return None


def service_url(url: str) -> str:
    """The record's URL as scheme://host:port when it is http(s) to a loopback address (the
    record names a service of this machine); ServiceUnusable otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, urlsplit("")
    plain = not (parts.username or parts.password or parts.query or parts.fragment)
    if (
        parts.scheme not in ("http", "https")
        or port is None
        or not plain
        or parts.path not in ("", "/")
        or not names_loopback(parts.hostname or "")
    ):
        raise ServiceUnusable(
            f"the service record's URL {url!r} is not http(s)://<loopback address>:<port>: "
            "ignored (a workspace's query service listens on this machine)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _record(workspace: Path) -> ServiceRecord:
    try:
        record = read_record(workspace)
    except ValueError as err:
        raise ServiceUnusable(str(err)) from None
    if record is None:
        raise ServiceUnusable("no query service is running for this workspace")
    if record.running() is False:
        raise ServiceUnusable(
            f"the query service at {record.url} (pid {record.pid}) is no longer running: its "
            f"record {WorkspaceLayout(Path(workspace)).query_service} is stale; start "
            "`vasrch query-server` again for fast queries"
        )
    return record


def identify(record: ServiceRecord, token: str | None) -> tuple[str, str | None]:
    """The service's URL and the token its requests carry, once it has proved it holds the key
    its record names (the token, or the record's key) by GET /identify; ServiceUnusable
    otherwise. Nothing secret is sent before the proof."""
    url = service_url(record.url)
    nonce = secrets.token_hex(32)
    try:
        identity = _call(url, None, f"/identify?nonce={nonce}", None, HEALTH_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        identity = {"refused": err.code}
    except (OSError, ValueError) as err:
        raise ServiceUnusable(
            f"stale record: nothing answers at {record.url} ({err}); the query service it "
            "names is not running"
        ) from None
    if record.token and not token:
        raise ServiceUnusable(
            f"the query service at {record.url} needs a token: set {TOKEN_ENV} for the runs"
        )
    key = token if record.token else record.key
    proof = identity.get("proof") if isinstance(identity, dict) else None
    port = urlsplit(url).port or 0
    expected = identity_proof(key, record.instance, port, nonce) if key else ""
    if not (isinstance(proof, str) and key and hmac.compare_digest(proof, expected)):
        also = f", or {TOKEN_ENV} is not its token" if record.token else ""
        raise ServiceUnusable(
            f"stale record: the service at {record.url} did not prove it is the one the record "
            f"names (another service listens there now{also}): not used"
        )
    return url, token if record.token else None


def find_service(workspace: Path, run: str | None, token: str | None) -> WarmService:
    """The warm service of `workspace`, proved to be the one its record names and checked to
    serve `run` (LATEST when None); a job sends it every image, whatever their number (with
    requests in flight, decoding overlaps inference there, which outpaces a job's own batched
    embedding on a CPU: see benchmarks/BENCHMARKS.md); ServiceUnusable says why not."""
    url, sent = identify(_record(workspace), token)
    try:
        health = _call(url, sent, "/health", None, HEALTH_TIMEOUT_S)
    except (OSError, ValueError) as err:
        raise ServiceUnusable(f"{url}/health failed: {err}") from None
    if not isinstance(health, dict) or not all(
        isinstance(health.get(name), kind) for name, kind in HEALTH_FIELDS.items()
    ):
        raise ServiceUnusable(f"{url}/health did not say which run it serves")
    service = WarmService(Path(workspace), url, sent, health)
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
    order; ServiceUnusable when it fails (the files not sent yet are not sent), moves to
    another run during the job, or names photos its run does not hold."""
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
    paths = service.paths()
    unknown = {r["image_id"] for _, a in found for r in a["results"]} - set(paths.index)
    if unknown:
        raise ServiceUnusable(
            f"{service.url} answered with photos run {service.run_id} does not hold: "
            f"{sorted(unknown)[:3]}"
        )
    return QueryAnswers(table_from_answers(found, paths), rejected, len(files))
