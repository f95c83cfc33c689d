"""The served run: loaded whole into memory and verified, swapped when runs/LATEST moves on.

A new run is loaded, its hashes checked (before and after loading), its backbone built and a
warm-up query answered, all off the request path; only then is the one reference to the served
run swapped under a lock. A request takes that reference once, so one complete run answers it.
A run that fails to load is logged and reported by /health; the old run keeps serving. Since
the served run lives in memory, its files changing afterwards changes nothing that is served.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vasrch.config import SearchConfig
from vasrch.features.backbones import Backbone
from vasrch.search.searcher import Searcher, open_run
from vasrch.workspace.remote_runs import follow_or_why
from vasrch.workspace.runs import latest_run_id
from vasrch.workspace.store import WorkspaceStore

log = logging.getLogger("vasrch.server")


@dataclass(frozen=True)
class Served:
    """One complete run, ready to answer: its searcher and its warm backbone."""

    searcher: Searcher
    backbone: Backbone
    loaded_at: str

    @property
    def run_id(self) -> str:
        """The served run's id, as its manifest records it."""
        return self.searcher.run_id

    @property
    def name(self) -> str:
        """The run folder's name, as runs/LATEST names it."""
        return self.searcher.run_folder.name


def load_served(workspace: Path, run: str | None, search: SearchConfig | None = None) -> Served:
    """Load a run into memory and verify it, build its backbone for single images, and answer
    one warm-up query so that the first real request pays no tracing or lazy-initialisation
    cost; `search` sets top_n and probes when a request names none."""
    searcher = open_run(workspace, run, search=search, in_memory=True)
    backbone = searcher.backbone(batch_size=1)
    size = backbone.spec.input_size
    vectors = backbone.embed(np.zeros((1, size, size, 3), dtype=np.uint8))
    searcher.search_vectors(vectors, top_n=1, probes=1)
    searcher.index.rows_of([""])
    return Served(searcher, backbone, dt.datetime.now(dt.timezone.utc).isoformat())


class RunHolder:
    """The served run; `refresh` swaps in the run LATEST names once it has loaded completely."""

    def __init__(
        self,
        workspace: Path,
        run: str | None = None,
        search: SearchConfig | None = None,
        store: WorkspaceStore | None = None,
    ) -> None:
        self.workspace = Path(workspace)
        self.search = search
        self.run = run
        self.pinned = run is not None
        self.store = store
        self.store_error: str | None = None
        self._lock = threading.Lock()
        self.follow_store()
        self._served = load_served(self.workspace, run, search)
        self._failed: str | None = None
        self.reload_error: str | None = None
        self.reloads = 0
        self.reload_failures = 0

    @property
    def served(self) -> Served:
        """The run serving now; a request takes it once, so one run answers it all."""
        with self._lock:
            return self._served

    def follow_store(self) -> None:
        """On a workspace in object storage, bring the store's LATEST run into the local cache
        (verified) and point the cache's LATEST at it (a pinned run: fetch that one), and copy
        the store's hidden-products record. A store that cannot be reached, or a run
        on it that fails its hashes, is logged and kept in `store_error`; what the cache holds
        keeps serving, and the next check tries again."""
        if self.store is None:
            return
        problem = follow_or_why(self.store, self.workspace, self.run)
        if problem is not None and problem != self.store_error:
            log.warning("cannot follow the store's LATEST: %s", problem)
        elif problem is None and self.store_error is not None:
            log.info("the store %s answers again", self.store.url)
        self.store_error = problem

    def refresh(self) -> bool:
        """Load the run LATEST names if it is a new one (on a workspace in object storage, the
        store's LATEST); True when the served run changed.

        A run that failed to load is not retried until LATEST names another one."""
        if self.pinned:
            return False
        self.follow_store()
        wanted = latest_run_id(self.workspace)
        if wanted is None or wanted in (self.served.name, self._failed):
            return False
        log.info("runs/LATEST names %s: loading it", wanted)
        try:
            fresh = load_served(self.workspace, wanted, self.search)
        except Exception as err:
            self._failed = wanted
            self.reload_error = f"run {wanted}: {type(err).__name__}: {err}"
            self.reload_failures += 1
            log.error("keeping run %s: could not load %s", self.served.run_id, self.reload_error)
            return False
        with self._lock:
            old, self._served = self._served, fresh
        self._failed = None
        self.reload_error = None
        self.reloads += 1
        log.info("now serving run %s (was %s)", fresh.run_id, old.run_id)
        return True

    def watch(
        self, stop: threading.Event, interval_s: float, checked: Callable[[], None] | None = None
    ) -> None:
        """Call `refresh` (then `checked`) every `interval_s` until `stop` is set; a bug is
        logged, never fatal."""
        while not stop.wait(interval_s):
            try:
                self.refresh()
                if checked is not None:
                    checked()
            except Exception:
                log.exception("reload check failed")
