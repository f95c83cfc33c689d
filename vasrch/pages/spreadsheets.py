"""CSV exports a person opens in a spreadsheet: cells that would run as formulas are defused.

OWASP's rule for CSV injection: a text cell starting with `=`, `+`, `-`, `@`, a tab or a
carriage return gets a leading `'`, so Excel, LibreOffice and Google Sheets show it as text
(`=HYPERLINK(...)` in a product title stays a title). Numbers stay numbers. Machine consumers
that need the raw text turn it off (`--raw-csv`, `bulk.csv_raw`).
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defuse_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot start a spreadsheet formula."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            text = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_STARTS))
            if text.any():
                out[column] = values.where(~text, "'" + values.astype(str))
    return out


def to_csv_text(frame: pd.DataFrame, raw: bool = False) -> str:
    """`frame` as CSV text, formulas defused unless `raw`."""
    return (frame if raw else defuse_formulas(frame)).to_csv(index=False)
