"""The progress bar on stderr (results stay alone on stdout), fed by vasrch.progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def sink_for(bar: Progress) -> Callable[[str, int, int | None], None]:
    """A vasrch.progress sink drawing on `bar`: one task per stage. Each total a stage
    reports adds to its bar's total: a stage may run more than once in a flow (the train flow
    extracts the catalog, then the held-out photos), and its bar counts them all."""
    tasks: dict[str, TaskID] = {}
    totals: dict[str, int] = {}

    def sink(stage: str, advance: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        if total is not None:
            totals[stage] = totals.get(stage, 0) + total
            bar.update(tasks[stage], total=totals[stage])
        if advance:
            bar.advance(tasks[stage], advance)

    return sink


@contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    """Draw vasrch.progress's reports as a rich progress bar on stderr for the block."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from vasrch import progress

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        progress.set_sink(sink_for(bar))
        try:
            yield
        finally:
            progress.set_sink(None)
