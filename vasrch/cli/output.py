"""Tables and lines on stdout: data printed literally (never read as rich markup), ids never cut.

A table wider than the console keeps its id columns whole; the other columns share what is
left, wrapping their cells, and the rightmost of them are dropped when even that is too little.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPED_WIDTH = 10_000  # columns of a table printed to a pipe or file: never cut
ID_COLUMNS = frozenset(
    {
        "query",
        "product_id",
        "image_id",
        "run_id",
        "group_id",
        "neighbour_id",
        "neighbour_image_id",
        "neighbour_product_id",
    }
)
MIN_WIDTH = 8  # the narrowest a wrapping column is squeezed to before columns are dropped


def stdout_console() -> Console:
    """A console on stdout: a terminal's width, else COLUMNS when set, else never cut."""
    from rich.console import Console

    tty_or_columns = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(width=None if tty_or_columns else PIPED_WIDTH, highlight=False)


def cell(value: Any) -> str:
    """A value as table text: floats to 4 decimals, everything else as str()."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_line(text: str, console: Console | None = None) -> None:
    """One line of data, literally, wrapped by the terminal (never cut or broken by rich)."""
    from rich.text import Text

    (console or stdout_console()).print(Text(text), soft_wrap=True)


def fit_columns(
    headers: Sequence[str], cells: Sequence[Sequence[str]], width: int, ids: frozenset[str]
) -> tuple[list[int], dict[int, int] | None]:
    """The indexes of the columns to show and, when they do not fit `width` as they are, the
    width of each: id columns keep their widest cell, the others share the rest (down to
    MIN_WIDTH each, or their widest cell when narrower; the rightmost go first when there is
    not enough)."""
    natural = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    keep = list(range(len(headers)))

    def room(columns: list[int]) -> int:  # width left for the wrapping columns
        frame = 3 * len(columns) + 1  # a border and a space either side of each column
        return width - frame - sum(natural[i] for i in columns if headers[i] in ids)

    if sum(natural) + 3 * len(keep) + 1 <= width:
        return keep, None
    others = [i for i in keep if headers[i] not in ids]
    while others and room(keep) < sum(min(natural[i], MIN_WIDTH) for i in others):
        keep.remove(others.pop())
    widths = {i: natural[i] for i in keep if headers[i] in ids}
    left = room(keep)
    for n, i in enumerate(sorted(others, key=lambda i: natural[i])):  # narrowest first
        widths[i] = max(1, min(natural[i], left // (len(others) - n)))
        left -= widths[i]
    return keep, widths


def print_table(
    rows: Sequence[Mapping[str, Any]],
    title: str | None = None,
    console: Console | None = None,
    ids: frozenset[str] = ID_COLUMNS,
    group_by: str | None = None,
) -> None:
    """Rows (dicts with the same keys) as a table under its title line; every header, cell
    and the title literal. With `group_by`, one table per value of that column, the value
    named once above it, the columns fitted once for all."""
    from rich.table import Table
    from rich.text import Text

    console = console or stdout_console()
    headers = [str(h) for h in rows[0] if h != group_by] if rows else []
    cells = [[cell(v) for k, v in row.items() if k != group_by] for row in rows]
    keep, widths = fit_columns(headers, cells, console.width, ids)
    # ids wider than the console on their own fold onto further lines rather than lose a part
    whole = widths is None or sum(widths.values()) + 3 * len(keep) + 1 <= console.width
    if title:
        print_line(title, console)
    groups: dict[Any, list[list[str]]] = {}
    for row, row_cells in zip(rows, cells, strict=True):
        groups.setdefault(row[group_by] if group_by else None, []).append(row_cells)
    for value, group in groups.items():
        if group_by:
            print_line(f"{group_by}: {value}", console)
        table = Table()
        for i in keep:
            table.add_column(
                Text(headers[i]),
                width=None if widths is None else widths[i],
                no_wrap=whole and headers[i] in ids,
                overflow="fold",
            )
        for row_cells in group:
            table.add_row(*(Text(row_cells[i]) for i in keep))
        console.print(table)
