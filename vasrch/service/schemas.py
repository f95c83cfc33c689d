"""The shapes the service reads and writes, as pydantic models (they also make /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from vasrch.service.settings import MAX_PROBES, MAX_TOP_N

TopN = Annotated[int, Field(ge=1, le=MAX_TOP_N)]
Probes = Annotated[int, Field(ge=1, le=MAX_PROBES)]
MAX_FILTER_COLUMNS = 16  # columns one request may filter on
MAX_FILTER_VALUES = 256  # values of one filter column
MAX_FILTER_TEXT = 256  # characters of a filter's column name or of one value
FILTER_LIMITS = (
    f"At most {MAX_FILTER_COLUMNS} columns, {MAX_FILTER_VALUES} values per column, "
    f"{MAX_FILTER_TEXT} characters per name or value."
)


def bounded_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """`filters` (column -> value or list of values), or a ValueError naming the limit they
    pass (`FILTER_LIMITS`): a request's filters cost work and a cached mask each."""
    if len(filters) > MAX_FILTER_COLUMNS:
        raise ValueError(f"{len(filters)} filter columns; {FILTER_LIMITS}")
    for column, values in filters.items():
        listed = [values] if isinstance(values, str) else values
        name = repr(column[:40])
        if len(listed) > MAX_FILTER_VALUES:
            raise ValueError(f"filter {name} has {len(listed)} values; {FILTER_LIMITS}")
        if max(map(len, [column, *listed])) > MAX_FILTER_TEXT:
            raise ValueError(f"filter {name}: a name or value is too long; {FILTER_LIMITS}")
    return filters


Filters = Annotated[dict[str, str | list[str]], AfterValidator(bounded_filters)]
DATA_URL_PREFIX = r"data:[\w.+/-]*(;[\w=.-]+)*;base64,"
# Standard base64, padded, after an optional data URL prefix (what parse_upload decodes).
BASE64_PATTERN = (
    rf"^({DATA_URL_PREFIX})?(?:[A-Za-z0-9+/]{{4}})*(?:[A-Za-z0-9+/]{{2}}==|[A-Za-z0-9+/]{{3}}=)?$"
)
TOP_N_HELP = "Results to return (default: /health's top_n)."
PROBES_HELP = "Nearest clusters whose members are ranked (default: /health's probes)."


class ImageQuery(BaseModel):
    """POST /query with Content-Type application/json: the image as base64, and options."""

    model_config = ConfigDict(extra="forbid")

    image_base64: str = Field(
        min_length=1,
        description="The image file's bytes in base64 (standard alphabet); a data URL "
        "(`data:image/jpeg;base64,...`) is accepted too.",
        # Documented for clients and schema-driven tests; parse_upload checks it with a message.
        json_schema_extra={"pattern": BASE64_PATTERN, "contentEncoding": "base64"},
    )
    top_n: TopN | None = Field(None, strict=True, description=TOP_N_HELP)
    probes: Probes | None = Field(None, strict=True, description=PROBES_HELP)
    filters: Filters | None = Field(
        None,
        description='Product metadata to match, e.g. {"category": ["shoes", "boots"]}: a '
        f"product passes when its value is one of those given, for every column named. "
        f"{FILTER_LIMITS}",
    )


class Neighbour(BaseModel):
    """One ranked product, then its metadata columns (category, title, url, ... as the
    catalog has them)."""

    model_config = ConfigDict(extra="allow")

    rank: int = Field(description="1 for the most similar product.")
    product_id: str = Field(description="The product (each product appears once).")
    score: float = Field(description="Cosine similarity of its best photo, 1.0 for the same image.")
    image_id: str = Field(description="The product's photo that matched (its catalog id).")
    path: str | None = Field(
        None, description="The photo's file path; only from a server started with --show-paths."
    )


class QueryAnswer(BaseModel):
    """The answer to a query."""

    run_id: str = Field(description="The run that answered, whole (one run per request).")
    query: str = Field(description="The catalog id asked for, or the upload's file name.")
    results: list[Neighbour]
    ms: float = Field(description="Time the service spent on the request, in milliseconds.")


class Health(BaseModel):
    """What GET /health reports: `status` to anyone; the rest only with the token (or from a
    service started without one)."""

    status: str = Field(description="`ok` whenever the service answers.")
    run_id: str | None = Field(None, description="The run being served.")
    k: int | None = Field(None, description="Clusters of the served index.")
    images: int | None = Field(None, description="Images in the served index.")
    top_n: int | None = Field(None, description="Results a request gets when it names none.")
    probes: int | None = Field(None, description="Clusters a request searches when it names none.")
    uptime_s: float | None = None
    loaded_at: str | None = Field(None, description="When the served run was loaded (UTC).")
    reloads: int | None = Field(None, description="Runs swapped in since start.")
    reload_error: str | None = Field(None, description="Why the newest run in LATEST is not used.")
    store_error: str | None = Field(
        None,
        description="A workspace in object storage: why its LATEST could not be followed at "
        "the last check (the cached run keeps serving).",
    )
    ms: float | None = None


class Identity(BaseModel):
    """What GET /identify answers: the proof that this service holds the key its workspace
    record names (its token, or the record's key), for the nonce asked."""

    proof: str = Field(
        description="HMAC-SHA256 (hex) over the instance id, the port and the nonce "
        "(vasrch.service.record.identity_proof)."
    )


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="What was wrong, and what to do about it.")


REFUSALS = {
    400: "Bad parameters, body or image (every problem found is named).",
    401: "No bearer token, or a wrong one.",
    403: "A route that needs a token, on a service started without one.",
    404: "The image id is not in the served run.",
    411: "Neither a Content-Length nor a chunked Transfer-Encoding.",
    413: "The upload is too large, or its image has too many pixels.",
    415: "A Content-Type the service does not read.",
    503: "Every decode slot stayed busy; retry after Retry-After seconds.",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that refuses with these statuses, and any other refusal."""
    answers: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": REFUSALS[status]} for status in statuses
    }
    answers["default"] = {"model": ErrorBody, "description": "Any other refusal."}
    return answers
