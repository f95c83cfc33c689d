"""The bulk step on real generated images: planted near-duplicates, CSV export, refusals."""

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw, ImageOps

from tests.configs import write_config
from vasrch.bulk.neighbours import NEIGHBOUR_COLUMNS
from vasrch.config import BulkConfig
from vasrch.orchestration.flows.bulk import bulk_flow
from vasrch.orchestration.flows.train import train_flow


def _scene(seed: int, size: int = 320) -> Image.Image:
    """A distinct 'product photo': a patterned background and a few filled polygons."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    step = int(rng.integers(16, 40))  # finer stripes alias in the 12-pixel duplicate prints
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    for x in range(0, size, step * 2):
        if rng.random() < 0.5:
            draw.rectangle((x, 0, x + step, size), fill=colour)
        else:
            for y in range(0, size, step * 2):
                draw.ellipse((x, y, x + step, y + step), fill=colour)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 60, 2))
        w, h = (int(v) for v in rng.integers(30, 160, 2))
        points = [(x0 + int(rng.integers(0, w)), y0 + int(rng.integers(0, h))) for _ in range(5)]
        draw.polygon(points, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), outline=0)
    return img


def _variants(img: Image.Image) -> dict[str, tuple[Image.Image, int]]:
    w, h = img.size
    return {
        "resized": (img.resize((int(w * 0.7), int(h * 0.7)), Image.LANCZOS), 92),
        "lowq": (img, 35),
        "cropped": (img.crop((int(w * 0.03), int(h * 0.03), int(w * 0.97), int(h * 0.97))), 92),
        "mirrored": (ImageOps.mirror(img), 92),
    }


def _save(img: Image.Image, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bulk")
    catalog = tmp / "catalog"
    groups = {}
    for s in range(4):
        img = _scene(s)
        _save(img, catalog / f"listing{s}" / "original.jpg", 92)
        members = {f"listing{s}/original.jpg"}
        for name, (variant, quality) in _variants(img).items():
            _save(variant, catalog / f"listing{s}" / f"{name}.jpg", quality)
            members.add(f"listing{s}/{name}.jpg")
        groups[s] = members
    for s in range(4, 16):
        _save(_scene(s), catalog / "distinct" / f"item{s}.jpg", 92)
    config = write_config(
        tmp,
        {
            "catalog": {"path": str(catalog)},
            "workspace": "ws",
            "clustering": {"num_clusters": 4},
            "search": {"probes": 4},
            "evaluation": {"sample": 20},
            "bulk": {"top_n": 6, "probes": 4},
        },
    )
    return config, groups, train_flow(str(config))


def test_planted_near_duplicates_form_one_group_each(planted) -> None:
    _, groups, result = planted
    dups = pd.read_parquet(result.run_dir / "bulk" / "duplicates.parquet")
    found = [set(g["image_id"]) for _, g in dups.groupby("group_id")]
    assert sorted(found, key=sorted) == sorted(groups.values(), key=sorted)
    assert not dups["image_id"].str.startswith("distinct/").any()
    assert (dups.groupby("group_id")["is_representative"].sum() == 1).all()
    assert (dups["score_to_representative"] >= BulkConfig().duplicate_threshold).all()
    assert result.manifest.bulk.duplicate_groups == 4


def test_the_near_duplicates_artifact_lists_each_group_with_scored_members(planted) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, groups, result = planted
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["near-duplicates"]))
        )
    rows = json.loads(found[-1].data) if isinstance(found[-1].data, str) else found[-1].data
    assert len(rows) == result.manifest.bulk.duplicate_groups == 4
    listed = []
    for row in rows:
        members = re.findall(r"(\S+) \((0\.\d{3}|1\.000)\)", row["members"])
        assert len(members) == row["size"] - 1
        listed.append({row["representative"], *(m for m, _ in members)})
    assert sorted(listed, key=sorted) == sorted(groups.values(), key=sorted)


def test_bulk_flow_on_saved_run_with_csv(planted) -> None:
    config, _, result = planted
    out = bulk_flow(str(config), run=result.run_id, top_n=3, csv=True)
    out_dir = out.out_dir
    assert out_dir.parent.name == result.run_id and (out_dir / "COMPLETE").is_file()
    assert out.summary.neighbour_rows == 32 * 3 and out.summary.top_n == 3
    table = pd.read_csv(out_dir / "neighbours.csv")
    # every photo its own product (folder mode): the photo table is the product table
    assert len(table) == 32 * 3 and list(table.columns) == NEIGHBOUR_COLUMNS
    assert (table["image_id"] != table["neighbour_id"]).all()
    assert table.groupby("image_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()


def test_neighbours_csv_defuses_formulas_unless_raw(tmp_path: Path) -> None:
    from vasrch.layout import BulkLayout
    from vasrch.orchestration.tasks.bulk import export_csv_task

    out = BulkLayout(tmp_path)
    ids = ['=HYPERLINK("https://evil.example","x")', "+1", "-SKU", "@SUM(1)", "SKU-2"]
    products = pd.DataFrame(
        {"product_id": ids, "rank": 1, "neighbour_product_id": ids[::-1], "score": -0.5}
    )
    products.to_parquet(out.products, index=False)
    export_csv_task.fn(out_dir=str(tmp_path))
    safe = pd.read_csv(out.csv, dtype={"product_id": str, "neighbour_product_id": str})
    assert safe["product_id"].tolist() == ["'" + i for i in ids[:4]] + ["SKU-2"]
    assert safe["neighbour_product_id"].tolist() == ["SKU-2"] + ["'" + i for i in ids[3::-1]]
    assert (safe["score"] == -0.5).all()  # numbers stay numbers
    export_csv_task.fn(out_dir=str(tmp_path), raw=True)
    raw = pd.read_csv(out.csv, dtype={"product_id": str, "neighbour_product_id": str})
    pd.testing.assert_frame_equal(raw, products)


def test_bulk_refuses_missing_run_and_other_backbone(planted, tmp_path: Path) -> None:
    from vasrch.workspace.runs import RunError

    config, _, _ = planted
    with pytest.raises(RunError, match="not found"):
        bulk_flow(str(config), run="20990101T000000000Z-abcdef")
    other = yaml.safe_load(config.read_text())
    other["features"] = {"pooling": "max"}
    other["workspace"] = str(config.parent / "ws")
    other_path = write_config(tmp_path, other, "other.yaml")
    with pytest.raises(RunError, match="was built with backbone"):
        bulk_flow(str(other_path))


def test_vasrch_duplicates_prints_the_groups_as_table_csv_and_json(planted, capsys) -> None:
    from vasrch.cli import main

    config, groups, result = planted
    argv = ["duplicates", "--config", str(config), "--run", result.run_id]
    assert main([*argv, "--format", "csv", "--show-paths"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == [
        "group_id",
        "image_id",
        "is_representative",
        "score_to_representative",
        "product_id",
        "path",
    ]
    found = [set(g["image_id"]) for _, g in table.groupby("group_id")]
    assert sorted(found, key=sorted) == sorted(groups.values(), key=sorted)
    assert all(Path(p).is_file() for p in table["path"])
    assert main([*argv, "--format", "json"]) == 0
    records = pd.DataFrame(json.loads(capsys.readouterr().out))
    # without --show-paths, no file path of the server
    pd.testing.assert_frame_equal(records, table.drop(columns="path"), check_dtype=False)
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "4 groups at duplicate score >= " in shown and "listing0/original.jpg" in shown
    assert main([*argv, "--threshold", "0.999", "--format", "json"]) == 0
    strict = pd.DataFrame(json.loads(capsys.readouterr().out))
    assert len(strict) < len(table) and (strict["score_to_representative"] >= 0.999).all()
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--threshold", "1.5"])
    assert refused.value.code == 2
    assert "--threshold: must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_vasrch_duplicates_refuses_a_run_whose_catalog_changed(planted, tmp_path) -> None:
    from vasrch.duplicates.groups import run_groups
    from vasrch.workspace.runs import RunError

    config, _, result = planted
    copy = shutil.copytree(result.run_dir, tmp_path / result.run_dir.name)
    catalog = copy / "catalog.parquet"
    pd.read_parquet(catalog).iloc[1:].to_parquet(catalog)
    with pytest.raises(RunError, match=r"catalog\.parquet"):
        run_groups(config.parent / "ws", copy, 0.92)


def test_vasrch_duplicates_does_not_import_prefect(planted) -> None:
    config, _, _ = planted
    code = (
        "import sys; from vasrch.cli import main; "
        f"status = main(['duplicates', '--config', {str(config)!r}, '--format', 'csv']); "
        "print('prefect' in sys.modules, status)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().endswith("False 0"), done.stderr[-2000:]
