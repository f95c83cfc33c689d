"""CSV exports defuse spreadsheet formulas (OWASP's rule) and keep numbers as numbers."""

from __future__ import annotations

import io

import pandas as pd

from vasrch.pages.spreadsheets import defuse_formulas, to_csv_text


def test_formula_cells_get_a_quote_and_numbers_stay_numbers() -> None:
    frame = pd.DataFrame(
        {
            "title": ['=HYPERLINK("http://evil","x")', "+1 sale", "@SUM(A1)", "plain", "-x"],
            "product_id": ["SKU-1", "\tTAB", "\rCR", "ok", "=1+1"],
            "score": [-0.5, 0.25, 1.0, 0.0, -1.0],
        }
    )
    safe = defuse_formulas(frame)
    assert safe["title"].tolist() == [
        '\'=HYPERLINK("http://evil","x")',
        "'+1 sale",
        "'@SUM(A1)",
        "plain",
        "'-x",
    ]
    assert safe["product_id"].tolist() == ["SKU-1", "'\tTAB", "'\rCR", "ok", "'=1+1"]
    assert safe["score"].tolist() == [-0.5, 0.25, 1.0, 0.0, -1.0]
    assert frame["title"][0].startswith("=")  # the input is left as it was
    back = pd.read_csv(io.StringIO(to_csv_text(frame)))
    assert back["title"][0].startswith("'=") and back["score"][0] == -0.5
    raw = pd.read_csv(io.StringIO(to_csv_text(frame, raw=True)))
    assert raw["title"][0].startswith("=HYPERLINK")
