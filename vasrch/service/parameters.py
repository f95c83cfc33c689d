"""The query string of /query, declared once: FastAPI validates each request with these models
and writes /openapi.json from them, so what the service accepts is what the document says."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vasrch.catalog.products import parse_filters
from vasrch.service.schemas import (
    FILTER_LIMITS,
    PROBES_HELP,
    TOP_N_HELP,
    Probes,
    TopN,
    bounded_filters,
)

FILTER_PREFIX = "filter."  # filter.category=shoes,boots

FilterParams = dict[
    Annotated[str, Field(pattern=rf"^{FILTER_PREFIX.replace('.', '[.]')}.*\S")],
    Annotated[str, Field(min_length=1)],
]


class SearchOptions(BaseModel):
    """top_n, probes and filters of a query; anything else in the query string is refused."""

    model_config = ConfigDict(extra="forbid")

    top_n: TopN | None = Field(None, description=TOP_N_HELP)
    probes: Probes | None = Field(None, description=PROBES_HELP)
    filters: FilterParams = Field(
        default_factory=dict,
        description=f"Product metadata to match, one query parameter a column: "
        f"`{FILTER_PREFIX}<column>=v1,v2` (any of the values; a repeated parameter adds its "
        f"values), e.g. `filter.category=shoes,boots`. {FILTER_LIMITS}",
        json_schema_extra={"additionalProperties": False},
    )

    @model_validator(mode="before")
    @classmethod
    def _gather_filters(cls, data: Any) -> Any:
        """The `filter.<column>` parameters as the one `filters` object (a form-exploded query
        parameter); a repeated one's values joined by commas."""
        if not isinstance(data, dict) or "filters" in data:
            return data
        given = {k: v for k, v in data.items() if k.startswith(FILTER_PREFIX)}
        rest = {k: v for k, v in data.items() if k not in given}
        if not given:
            return rest
        return {**rest, "filters": {k: _joined(v) for k, v in given.items()}}

    @model_validator(mode="after")
    def _bounded_filters(self) -> SearchOptions:
        """The filters within the same limits as a JSON body's, counted once split."""
        bounded_filters(self.filter_spec)
        return self

    @property
    def filter_spec(self) -> dict[str, list[str]]:
        """The filters by column (`parse_filters`'s shape)."""
        return parse_filters(
            f"{name.removeprefix(FILTER_PREFIX)}={values}" for name, values in self.filters.items()
        )


class CatalogQuery(SearchOptions):
    """GET /query: a catalog image's id, and the options."""

    id: str = Field(min_length=1, description="A catalog image id; the image itself is left out.")


def _joined(value: str | list[str]) -> str:
    return value if isinstance(value, str) else ",".join(value)


def unknown_parameter(name: str) -> str:
    """The reason given for a query parameter no query reads."""
    known = sorted(set(CatalogQuery.model_fields) - {"filters"})
    return f"unknown query parameter {name!r}; known: {known} and {FILTER_PREFIX}<column>"
