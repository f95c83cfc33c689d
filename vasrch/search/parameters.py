"""How many results and how many clusters to search: one rule for every entry point.

The CLI, the Python API, the query server, the query and bulk flows and the train flow's bulk
step all ask `resolve_search_params`, so an explicit argument, the config and the run's
calibration are weighed the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from vasrch.config import BulkConfig, SearchConfig
from vasrch.errors import UsageError

# Probes for runs that carry no calibration (trained before `probes: auto` existed).
UNCALIBRATED_PROBES = 3


@dataclass(frozen=True)
class SearchParams:
    """Results per query and nearest clusters searched, both already within the index's size."""

    top_n: int
    probes: int


def check_count(name: str, value: int | None) -> int | None:
    """`value` unchanged when None or a whole number of at least 1, else UsageError. The edges
    that take top_n and probes from a caller check them (the config schema, the CLI's and the
    service's argument types, the flows' signatures, the Python API and Searcher); code inside
    trusts them."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def resolve_search_params(
    *,
    k: int,
    n: int,
    top_n: int | None = None,
    probes: int | None = None,
    configured: SearchConfig | BulkConfig | None = None,
    calibrated: int | None = None,
) -> SearchParams:
    """top_n and probes for a search of an index of `n` vectors in `k` clusters.

    Each comes from the explicit argument when given, else from `configured` (the config's
    `search` or `bulk` section; its defaults when None). Probes `auto` means the run's
    `calibrated` probes, or UNCALIBRATED_PROBES for a run without one. top_n is capped by `n`
    and probes by `k`, so no request allocates more than the index holds. Explicit arguments
    were checked where they entered (check_count).
    """
    section = configured or SearchConfig()
    chosen_top_n = top_n or section.top_n
    chosen_probes = probes
    if chosen_probes is None:
        setting = section.probes
        chosen_probes = (calibrated or UNCALIBRATED_PROBES) if setting == "auto" else setting
    return SearchParams(top_n=min(chosen_top_n, max(n, 1)), probes=min(chosen_probes, max(k, 1)))
